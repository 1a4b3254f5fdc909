//! Prometheus metrics at `--metrics-listen ADDR`, path `/metrics`, in the
//! Prometheus text format, served by `metrics-exporter-prometheus`.
//!
//! The endpoint is plain HTTP without authentication: bind it to loopback
//! or a private interface. Labels are command names, outcomes, error codes
//! and fixed reasons: never a key name, a token id or an address.
//!
//! Per request the cost is two clock reads, one counter increment and one
//! push of the duration onto its command's buffer, and only with the
//! endpoint on. The buffers go into the exporter's histograms once a second,
//! with everything the server already counts for INFO, so those figures are
//! at most a second old when scraped. (Recording each duration straight into
//! the exporter's histogram, whose lock-free bucket pins an epoch per
//! sample, cost 3 to 6% of SET -P1 throughput; buffered, the samples go in
//! with warm caches, one thread, in bulk.)
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cryptomem_commands_total` | counter | `command`, `outcome` (`ok`, `not_found`, `error`) |
//! | `cryptomem_command_errors_total` | counter | `command`, `code` (the error code: `OOM`, `NOPERM`, ...) |
//! | `cryptomem_command_duration_seconds` | histogram | `command`; execution time in the server, without network and fsync waits |
//! | `cryptomem_auth_total` | counter | `outcome`: `ok`, `invalid_token`, `locked_out`, `overloaded`, `unavailable` |
//! | `cryptomem_auth_lockouts_total` | counter | addresses locked out after too many failures |
//! | `cryptomem_connections_open` | gauge | |
//! | `cryptomem_connections_total` | counter | accepted |
//! | `cryptomem_connections_rejected_total` | counter | turned away at `--max-connections` |
//! | `cryptomem_handshake_failures_total`, `cryptomem_protocol_errors_total`, `cryptomem_requests_timed_out_total` | counter | |
//! | `cryptomem_keys` | gauge | |
//! | `cryptomem_memory_used_bytes`, `cryptomem_memory_max_bytes` (0: no limit), `cryptomem_memory_resident_bytes` | gauge | |
//! | `cryptomem_evicted_keys_total`, `cryptomem_expired_keys_total`, `cryptomem_keyspace_hits_total`, `cryptomem_keyspace_misses_total` | counter | |
//! | `cryptomem_active_defrag_hits_total` | counter | map allocations active defrag copied |
//! | `cryptomem_log_written_bytes_total` | counter | bytes appended to log segments |
//! | `cryptomem_log_fsync_duration_seconds` | histogram | |
//! | `cryptomem_snapshots_total` | counter | |
//! | `cryptomem_snapshot_duration_seconds` | gauge | the newest snapshot's |
//! | `cryptomem_snapshot_age_seconds` | gauge | since the newest snapshot this process wrote; absent before the first |
//! | `cryptomem_persistence_errors_total` | counter | `kind`: `log` (each failed write or fsync, retries included), `snapshot` |

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::protocol::{RESPONSE_HEADER_LEN, Status, commands};

use super::Shared;

/// Histogram buckets in seconds: 10 us to 1 s.
const BUCKETS: [f64; 15] =
    [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0];
/// Error codes that get their own label; any other is counted as `OTHER`.
const CODES: [&str; 13] = [
    "ERR",
    "NOAUTH",
    "WRONGPASS",
    "LOCKED",
    "BUSY",
    "NOPERM",
    "TOOBIG",
    "TIMEOUT",
    "PROTO",
    "CONFLICT",
    "NOCURSOR",
    "IOERR",
    "OOM",
];
/// `outcome` labels of `cryptomem_auth_total`, in [`AuthOutcome`] order.
const AUTH_OUTCOMES: [&str; 5] = ["ok", "invalid_token", "locked_out", "overloaded", "unavailable"];

/// How an AUTH ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AuthOutcome {
    Ok = 0,
    InvalidToken = 1,
    LockedOut = 2,
    Overloaded = 3,
    Unavailable = 4,
}

/// Durations waiting for the once-a-second move into the histograms; past
/// this many a command's samples go straight in.
const BUFFERED_SAMPLES: usize = 1 << 20;

/// One command's handles.
struct CommandMetrics {
    name: &'static str,
    /// ok, not_found, error.
    outcomes: [Counter; 3],
    duration: Histogram,
    /// Seconds, as f32 (7 significant digits).
    pending: std::sync::Mutex<Vec<f32>>,
}

/// Handles to every metric, registered once; the hot path only touches these.
pub(crate) struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// By command code.
    commands: Vec<Option<CommandMetrics>>,
    auth: [Counter; 5],
    sampled: Sampled,
}

/// What is copied from the server's own counters each second.
struct Sampled {
    lockouts: Counter,
    connections_open: Gauge,
    connections_total: Counter,
    connections_rejected: Counter,
    handshake_failures: Counter,
    protocol_errors: Counter,
    requests_timed_out: Counter,
    keys: Gauge,
    memory_used: Gauge,
    memory_max: Gauge,
    memory_resident: Gauge,
    evicted: Counter,
    expired: Counter,
    defrag_hits: Counter,
    hits: Counter,
    misses: Counter,
    log_bytes: Counter,
    snapshots: Counter,
    snapshot_duration: Gauge,
    snapshot_age: Gauge,
    log_errors: Counter,
    snapshot_errors: Counter,
}

/// The metrics endpoint could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

impl Metrics {
    /// Binds `addr` and starts serving; must run inside the tokio runtime.
    pub(crate) fn serve(addr: SocketAddr) -> Result<Self, MetricsError> {
        let err = |e: &dyn std::fmt::Display| MetricsError { addr, reason: e.to_string() };
        let (recorder, exporter) = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&BUCKETS)
            .map_err(|e| err(&e))?
            .upkeep_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| err(&e))?;
        tokio::spawn(async move {
            if let Err(e) = exporter.await {
                tracing::warn!(error = ?e, "the metrics endpoint stopped");
            }
        });
        Ok(Self::register(recorder))
    }

    fn register(recorder: PrometheusRecorder) -> Self {
        let handle = recorder.handle();
        let (commands, auth, sampled) = metrics::with_local_recorder(&recorder, || {
            describe();
            let mut by_code: Vec<Option<CommandMetrics>> = (0..256).map(|_| None).collect();
            for c in commands::ALL {
                let name = c.name;
                let outcome = |o: &'static str| counter!("cryptomem_commands_total", "command" => name, "outcome" => o);
                by_code[usize::from(c.code)] = Some(CommandMetrics {
                    name,
                    outcomes: [outcome("ok"), outcome("not_found"), outcome("error")],
                    duration: metrics::histogram!("cryptomem_command_duration_seconds", "command" => name),
                    pending: std::sync::Mutex::default(),
                });
            }
            let auth = AUTH_OUTCOMES.map(|o| counter!("cryptomem_auth_total", "outcome" => o));
            (by_code, auth, Sampled::register())
        });
        Self { recorder, handle, commands, auth, sampled }
    }

    /// Counts one executed command whose response is `response` (its
    /// encoded bytes) and that took `took`.
    pub(crate) fn command(&self, code: u8, response: &[u8], took: Duration) {
        let Some(Some(CommandMetrics { name, outcomes, duration, pending })) = self.commands.get(usize::from(code))
        else {
            return;
        };
        let mut samples = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() < BUFFERED_SAMPLES {
            samples.push(took.as_secs_f32());
        } else {
            drop(samples);
            duration.record(took);
        }
        let status = response.get(2).copied().unwrap_or(Status::Error as u8);
        match status {
            s if s == Status::Ok as u8 => outcomes[0].increment(1),
            s if s == Status::NotFound as u8 => outcomes[1].increment(1),
            _ => {
                outcomes[2].increment(1);
                self.error(name, response.get(RESPONSE_HEADER_LEN..).unwrap_or_default());
            }
        }
    }

    /// Counts a command refused before it ran (NOPERM).
    pub(crate) fn refused(&self, code: u8, error_code: &'static str) {
        let Some(Some(CommandMetrics { name, outcomes, .. })) = self.commands.get(usize::from(code)) else { return };
        outcomes[2].increment(1);
        self.error(name, error_code.as_bytes());
    }

    fn error(&self, command: &'static str, body: &[u8]) {
        let code = body.split(|b| *b == b' ').next().unwrap_or_default();
        let code = CODES.iter().find(|c| c.as_bytes() == code).copied().unwrap_or("OTHER");
        metrics::with_local_recorder(&self.recorder, || {
            counter!("cryptomem_command_errors_total", "command" => command, "code" => code).increment(1);
        });
    }

    /// Counts one AUTH.
    pub(crate) fn auth(&self, outcome: AuthOutcome) {
        self.auth[outcome as usize].increment(1);
    }

    /// Moves the buffered durations into the histograms.
    fn drain_durations(&self) {
        let mut batch = Vec::new();
        for c in self.commands.iter().flatten() {
            std::mem::swap(&mut batch, &mut *c.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            for seconds in batch.drain(..) {
                c.duration.record(f64::from(seconds));
            }
        }
    }

    /// Copies the server's counters into the exporter; runs once a second.
    pub(crate) fn sample(&self, shared: &Shared) {
        self.drain_durations();
        let s = &self.sampled;
        let stats = &shared.stats;
        s.lockouts.absolute(shared.auth.throttle().lockouts.load(Relaxed));
        s.connections_open.set(stats.connections_current.load(Relaxed) as f64);
        s.connections_total.absolute(stats.connections_total.load(Relaxed));
        s.connections_rejected.absolute(stats.connections_rejected.load(Relaxed));
        s.handshake_failures.absolute(stats.handshake_failures.load(Relaxed));
        s.protocol_errors.absolute(stats.protocol_errors.load(Relaxed));
        s.requests_timed_out.absolute(stats.requests_timed_out.load(Relaxed));
        let store = &shared.store;
        s.keys.set(store.len() as f64);
        let memory = store.memory();
        s.memory_used.set(memory.used() as f64);
        s.memory_max.set(memory.limit() as f64);
        if let Some(rss) = super::stats::resident_bytes() {
            s.memory_resident.set(rss as f64);
        }
        s.evicted.absolute(memory.evicted());
        s.expired.absolute(stats.expired_keys.load(Relaxed));
        s.defrag_hits.absolute(stats.defrag_hits.load(Relaxed));
        let (hits, misses) = store.hits_and_misses();
        s.hits.absolute(hits);
        s.misses.absolute(misses);
        let log = shared.persistence.log();
        s.log_bytes.absolute(log.bytes_written());
        s.log_errors.absolute(log.failures());
        let snapshots = shared.persistence.snapshot_figures();
        s.snapshots.absolute(snapshots.taken);
        s.snapshot_errors.absolute(snapshots.failed);
        if let Some(d) = snapshots.last_duration {
            s.snapshot_duration.set(d.as_secs_f64());
        }
        if let Some(at) = snapshots.last_unix_ms {
            s.snapshot_age.set(shared.config.clock.now_ms().saturating_sub(at) as f64 / 1000.0);
        }
    }

    /// Where fsync durations go.
    pub(crate) fn fsync_histogram(&self) -> Histogram {
        metrics::with_local_recorder(&self.recorder, || metrics::histogram!("cryptomem_log_fsync_duration_seconds"))
    }

    /// Keeps histogram storage bounded between scrapes.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

impl Sampled {
    fn register() -> Self {
        Self {
            lockouts: counter!("cryptomem_auth_lockouts_total"),
            connections_open: gauge!("cryptomem_connections_open"),
            connections_total: counter!("cryptomem_connections_total"),
            connections_rejected: counter!("cryptomem_connections_rejected_total"),
            handshake_failures: counter!("cryptomem_handshake_failures_total"),
            protocol_errors: counter!("cryptomem_protocol_errors_total"),
            requests_timed_out: counter!("cryptomem_requests_timed_out_total"),
            keys: gauge!("cryptomem_keys"),
            memory_used: gauge!("cryptomem_memory_used_bytes"),
            memory_max: gauge!("cryptomem_memory_max_bytes"),
            memory_resident: gauge!("cryptomem_memory_resident_bytes"),
            evicted: counter!("cryptomem_evicted_keys_total"),
            expired: counter!("cryptomem_expired_keys_total"),
            defrag_hits: counter!("cryptomem_active_defrag_hits_total"),
            hits: counter!("cryptomem_keyspace_hits_total"),
            misses: counter!("cryptomem_keyspace_misses_total"),
            log_bytes: counter!("cryptomem_log_written_bytes_total"),
            snapshots: counter!("cryptomem_snapshots_total"),
            snapshot_duration: gauge!("cryptomem_snapshot_duration_seconds"),
            snapshot_age: gauge!("cryptomem_snapshot_age_seconds"),
            log_errors: counter!("cryptomem_persistence_errors_total", "kind" => "log"),
            snapshot_errors: counter!("cryptomem_persistence_errors_total", "kind" => "snapshot"),
        }
    }
}

fn describe() {
    describe_counter!("cryptomem_commands_total", "Commands executed, by command and outcome.");
    describe_counter!("cryptomem_command_errors_total", "Commands answered with an error, by command and error code.");
    describe_histogram!(
        "cryptomem_command_duration_seconds",
        metrics::Unit::Seconds,
        "Time to execute a command in the server (no network, no fsync wait)."
    );
    describe_counter!("cryptomem_auth_total", "AUTH attempts by outcome.");
    describe_counter!("cryptomem_auth_lockouts_total", "Addresses locked out after too many failed AUTHs.");
    describe_gauge!("cryptomem_connections_open", "Open client connections.");
    describe_counter!("cryptomem_connections_total", "Connections accepted.");
    describe_counter!("cryptomem_connections_rejected_total", "Connections turned away at the connection limit.");
    describe_counter!("cryptomem_handshake_failures_total", "Handshakes that failed or timed out.");
    describe_counter!("cryptomem_protocol_errors_total", "Connections closed for a protocol violation.");
    describe_counter!("cryptomem_requests_timed_out_total", "Connections closed because a request arrived too slowly.");
    describe_gauge!("cryptomem_keys", "Keys in the keyspace.");
    describe_gauge!("cryptomem_memory_used_bytes", metrics::Unit::Bytes, "Memory counted against --maxmemory.");
    describe_gauge!("cryptomem_memory_max_bytes", metrics::Unit::Bytes, "--maxmemory; 0 is no limit.");
    describe_gauge!("cryptomem_memory_resident_bytes", metrics::Unit::Bytes, "Resident set size of the process.");
    describe_counter!("cryptomem_evicted_keys_total", "Keys evicted at the memory limit.");
    describe_counter!("cryptomem_expired_keys_total", "Keys removed by expiry.");
    describe_counter!("cryptomem_active_defrag_hits_total", "Map allocations active defrag copied.");
    describe_counter!("cryptomem_keyspace_hits_total", "Reads that found their key.");
    describe_counter!("cryptomem_keyspace_misses_total", "Reads that did not.");
    describe_counter!("cryptomem_log_written_bytes_total", metrics::Unit::Bytes, "Bytes appended to the log.");
    describe_histogram!("cryptomem_log_fsync_duration_seconds", metrics::Unit::Seconds, "Log fsync durations.");
    describe_counter!("cryptomem_snapshots_total", "Snapshots written.");
    describe_gauge!("cryptomem_snapshot_duration_seconds", metrics::Unit::Seconds, "The newest snapshot's duration.");
    describe_gauge!("cryptomem_snapshot_age_seconds", metrics::Unit::Seconds, "Time since the newest snapshot.");
    describe_counter!("cryptomem_persistence_errors_total", "Failed log writes or fsyncs, and failed snapshots.");
}
