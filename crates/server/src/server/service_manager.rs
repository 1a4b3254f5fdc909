//! Telling a service manager (systemd `Type=notify`) how start-up goes.
//!
//! The listener opens only after the keyspace is loaded, so there is no
//! half-started state a client could see: until then connections are
//! refused, never left hanging. `READY=1` goes out once the listener is up;
//! `STATUS=` lines say what the server is doing before that. Without
//! `NOTIFY_SOCKET` (not started by such a manager) these do nothing.

use tracing::debug;

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
