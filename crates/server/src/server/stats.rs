//! Counters the server keeps, and the INFO text built from them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::store::Store;

/// Process-wide counters; all relaxed atomics, read only for INFO.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Open connections.
    pub connections_current: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections turned away at the connection limit.
    pub connections_rejected: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// Requests executed.
    pub commands_processed: AtomicU64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// Keys removed by the expiry janitor.
    pub expired_keys: AtomicU64,
    /// Active defrag passes that copied map nodes.
    pub defrag_passes: AtomicU64,
    /// Map allocations active defrag copied (Redis's `active_defrag_hits`).
    pub defrag_hits: AtomicU64,
    /// Connections closed because a request did not arrive within `--request-timeout`.
    pub requests_timed_out: AtomicU64,
    /// Connections closed because incomplete requests exceeded `--request-buffer-limit`.
    pub requests_refused_buffer_full: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections_current: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            defrag_passes: AtomicU64::new(0),
            defrag_hits: AtomicU64::new(0),
            requests_timed_out: AtomicU64::new(0),
            requests_refused_buffer_full: AtomicU64::new(0),
        }
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// The INFO body: `# Section` headers and `name:value` lines.
    pub fn render(
        &self,
        store: &Store,
        max_connections: usize,
        incomplete_request_bytes: usize,
        log_buffer_bytes: u64,
    ) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(1024);
        let _ = writeln!(out, "# Server");
        let _ = writeln!(out, "version:{}", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(out, "wire_version:{}", crate::secure::handshake::WIRE_VERSION);
        let _ = writeln!(out, "uptime_seconds:{}", self.started.elapsed().as_secs());
        let _ = writeln!(out, "process_id:{}", std::process::id());
        let _ = writeln!(out, "\n# Clients");
        let _ = writeln!(out, "connected_clients:{}", get(&self.connections_current));
        let _ = writeln!(out, "max_clients:{max_connections}");
        let _ = writeln!(out, "total_connections_received:{}", get(&self.connections_total));
        let _ = writeln!(out, "rejected_connections:{}", get(&self.connections_rejected));
        let _ = writeln!(out, "handshake_failures:{}", get(&self.handshake_failures));
        let _ = writeln!(out, "\n# Memory");
        let memory = store.memory();
        let _ = writeln!(out, "used_memory:{}", memory.used());
        let _ = writeln!(out, "used_memory_peak:{}", memory.peak().max(memory.used()));
        let _ = writeln!(out, "used_memory_dataset:{}", memory.data());
        let _ = writeln!(out, "used_memory_buffers:{}", memory.external());
        let _ = writeln!(out, "maxmemory:{}", memory.limit());
        let _ = writeln!(out, "maxmemory_policy:{}", memory.policy());
        let _ = writeln!(out, "maxmemory_samples:{}", memory.samples());
        if let Some(fading) = store.tinylfu_fading() {
            let _ = writeln!(out, "tinylfu_ranking:{}", if fading { "faded" } else { "counts" });
        }
        let _ = writeln!(out, "used_memory_log_buffer:{log_buffer_bytes}");
        let _ = writeln!(
            out,
            "used_memory_not_counted:log buffer, shard headers, replaced map nodes still read, allocator metadata"
        );
        let _ = writeln!(out, "incomplete_request_bytes:{incomplete_request_bytes}");
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(out, "used_memory_rss:{rss}");
        }
        let _ = writeln!(out, "\n# Stats");
        let _ = writeln!(out, "total_commands_processed:{}", get(&self.commands_processed));
        let _ = writeln!(out, "protocol_errors:{}", get(&self.protocol_errors));
        let _ = writeln!(out, "expired_keys:{}", get(&self.expired_keys));
        let _ = writeln!(out, "evicted_keys:{}", memory.evicted());
        let (hits, misses) = store.hits_and_misses();
        let _ = writeln!(out, "keyspace_hits:{hits}");
        let _ = writeln!(out, "keyspace_misses:{misses}");
        let _ = writeln!(out, "requests_timed_out:{}", get(&self.requests_timed_out));
        let _ = writeln!(out, "requests_refused_buffer_full:{}", get(&self.requests_refused_buffer_full));
        let _ = writeln!(out, "active_defrag_passes:{}", get(&self.defrag_passes));
        let _ = writeln!(out, "active_defrag_hits:{}", get(&self.defrag_hits));
        let _ = writeln!(out, "\n# Keyspace");
        let _ = writeln!(out, "keys:{}", store.len());
        let _ = writeln!(out, "shards:{}", store.shard_count());
        out
    }
}

/// Resident set size from `/proc/self/statm` (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
