//! Telling a service manager (systemd `Type=notify`) how start-up goes.
//!
//! The listener opens only after the keyspace is loaded, so there is no
//! half-started state a client could see: until then connections are
//! refused, never left hanging. `READY=1` goes out once the listener is up;
//! `STATUS=` lines say what the server is doing before that. Without
//! `NOTIFY_SOCKET` (not started by such a manager) these do nothing.

use std::time::Duration;

use tracing::{debug, info};

use crate::persist::LoadProgress;

/// Loads shorter than this log no progress lines.
const QUIET_LOAD: Duration = Duration::from_secs(1);

/// Reports a tenth of the keyspace loaded: a `STATUS=` line always, a log
/// line once loading has taken [`QUIET_LOAD`].
pub fn loading(p: LoadProgress, elapsed: Duration) {
    let percent = p.done_bytes.saturating_mul(100) / p.total_bytes.max(1);
    let per_s = (p.items as f64 / elapsed.as_secs_f64().max(1e-3)) as u64;
    status(&format!("loading the keyspace: {percent}% ({} keys and changes, {per_s}/s)", p.items));
    if elapsed >= QUIET_LOAD {
        info!(percent, items = p.items, per_s, mib = p.done_bytes >> 20, total_mib = p.total_bytes >> 20, "loading");
    }
}

/// Sends `STATUS=text`.
pub fn status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

/// Sends `READY=1` with a final status.
pub fn ready(text: &str) {
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(text)]);
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    // Failing to notify must never stop the server: the manager times out
    // and says so itself.
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}
