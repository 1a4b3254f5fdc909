//! The tokio runtime the server is meant to run on, for the `cryptomem`
//! binary and for programs embedding [`super::Server`].

/// Readiness events a worker takes from the OS per poll (tokio's default is
/// 1024). A poll wakes every connection it reports at once; past the
/// 256 a worker's local queue holds, the rest go to the shared queue,
/// which the worker visits only now and then, so under load some sessions
/// waited several rounds while others were served every round. With fewer
/// per poll, the rest stay in the kernel's ready list, which hands them out
/// in the order they became ready. Measured on 2 cores (`threads` 1,
/// 100-byte values, medians): SET with 1,000 connections p99 89.6 -> 31.9
/// ms at 64 (8 rounds); GET with 1,000 connections, pipeline 16, 154 -> 53
/// ms at 32; 32 beat 64 (25.8 against 30.1 ms); ops/s and CPU per request
/// unchanged, since a poll is one syscall per 32 sessions served.
pub const IO_EVENTS_PER_POLL: usize = 32;

/// A multi-threaded runtime with `threads` workers (at least one), I/O and
/// timers enabled and [`IO_EVENTS_PER_POLL`] events per poll: what
/// `cryptomem serve` runs on. A program embedding the server on a runtime
/// of its own gets the same fairness under many connections by setting
/// `max_io_events_per_tick` likewise.
///
/// # Errors
/// The OS refused the runtime's threads or its I/O driver.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .max_io_events_per_tick(IO_EVENTS_PER_POLL)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_with_the_threads_asked_for() {
        for threads in [0, 1, 3] {
            let rt = super::runtime(threads).unwrap();
            assert_eq!(rt.metrics().num_workers(), threads.max(1));
            let slept = rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tokio::net::TcpListener::bind("127.0.0.1:0").await.is_ok()
            });
            assert!(slept, "timers and I/O are enabled");
        }
    }
}
