//! Work that must not compete with serving: a thread of its own, at a lower
//! CPU priority.
//!
//! A snapshot walks every key (about 0.3 s of a core per million keys) and
//! then deletes the files it supersedes (unlinking a large file takes the
//! kernel a while). On the runtime's threads that would stall every
//! connection they serve; on a thread of its own at `nice` +10 the kernel
//! prefers the threads serving requests whenever both want a core, and the
//! snapshot still runs at full speed on a machine with room.
//!
//! Measured on 2 cores beside the benchmark client, priority is not most of
//! the story: SET p99 roughly doubles while snapshots run back to back at
//! nice 0, 10, 19 or `SCHED_IDLE` alike; what costs is sharing memory
//! bandwidth and caches, and allocating fresh memory while the snapshot's cut
//! keeps replaced values alive (less since a snapshot lets go of each shard's
//! version once written: RSS growth while snapshotting fell from about 7% to
//! 3%, p99 did not move measurably).

use tokio::sync::oneshot;

/// How much lower the background thread's priority is (`nice` steps).
pub const NICE_STEPS: i32 = 10;

/// Why a background job gave no result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The OS refused a new thread.
    #[error("cannot start a background thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The job panicked.
    #[error("the background thread stopped without a result (it panicked)")]
    Panicked,
}

/// Runs `f` on a new thread named `name` at a lower priority and returns its
/// result. Lowering the priority is best effort: where the OS refuses, `f`
/// runs at normal priority.
///
/// # Errors
/// [`BackgroundError`] if the thread cannot start or `f` panics.
pub async fn run<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, BackgroundError> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(f());
        })
        .map_err(BackgroundError::Spawn)?;
    rx.await.map_err(|_| BackgroundError::Panicked)
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id changes that thread alone.
    let me = Some(rustix::thread::gettid());
    if let Ok(now) = rustix::process::getpriority_process(me) {
        let _ = rustix::process::setpriority_process(me, (now + NICE_STEPS).min(19));
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_at_a_lower_priority_and_returns_the_result() {
        let ours = current_priority();
        let theirs = super::run("test-background", current_priority).await.unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(theirs, (ours + super::NICE_STEPS).min(19));
        }
        let panicked = super::run("test-background", || -> u8 { panic!("boom") }).await;
        assert!(matches!(panicked, Err(super::BackgroundError::Panicked)));
    }

    fn current_priority() -> i32 {
        #[cfg(target_os = "linux")]
        {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
        }
        #[cfg(not(target_os = "linux"))]
        0
    }
}
