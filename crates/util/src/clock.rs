//! Wall-clock time in Unix milliseconds, the unit of every expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the store and server read the time from.
///
/// Expiries are absolute Unix milliseconds so they survive restarts; the
/// manual clock exists so tests can move time without sleeping (tokio's paused
/// time cannot move the wall clock, and would also fire socket timeouts).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at the current wall-clock time.
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicU64::new(system_now_ms())))
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::System => system_now_ms(),
            Self::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(ms) = self {
            ms.fetch_add(duration_ms_ceil(by), Ordering::Relaxed);
        }
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration in whole milliseconds, rounded up so a TTL never ends early.
pub fn duration_ms_ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The absolute expiry for a TTL starting at `now_ms`.
pub fn deadline(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(duration_ms_ceil(ttl))
}
