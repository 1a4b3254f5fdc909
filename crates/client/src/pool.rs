//! The connections one [`crate::Client`] spreads its requests over, and
//! how a lost one is replaced.
//!
//! A request takes an idle connection (none of its requests in flight),
//! looking from the next slot round robin; when every open connection is
//! busy it opens a slot not yet used, and once all are open it takes the
//! least busy. So a client used by one task at a time keeps one
//! connection, and a busy one grows to [`crate::ClientConfig::connections`].
//! A server runs each connection's requests in order on one task, so one
//! connection caps a busy client at one server thread; several let the
//! server's threads share it.
//!
//! A slot whose connection broke reconnects on its next use. When that
//! fails, the slot waits before the next attempt: [`Backoff::initial`],
//! doubled per consecutive failure up to [`Backoff::max`], each wait drawn
//! at random from its upper half so that many clients do not retry in
//! step. Meanwhile requests go to another slot with a live connection if
//! there is one, else fail at once with the last error and the time left
//! (no request waits for a server that is down; at most one connection
//! attempt per slot per wait reaches it). A success resets the wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::connection::{ConnectParams, Connection};
use crate::error::{Error, Result};

/// How long a slot waits between failed connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure (default 50 ms).
    pub initial: Duration,
    /// Longest wait (default 5 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(50), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The upper bound of the wait after `failures` consecutive failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    fn draw(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
    }
}

#[derive(Default)]
struct Failing {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

#[derive(Default)]
struct Slot {
    connection: ArcSwapOption<Connection>,
    reconnect: tokio::sync::Mutex<Failing>,
    /// Calls waiting for a response on this slot's connection.
    in_flight: AtomicUsize,
}

/// A connection lent to one call; counts the call as in flight on its slot
/// until dropped.
pub(crate) struct Lease<'a> {
    pub(crate) connection: Arc<Connection>,
    in_flight: &'a AtomicUsize,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        self.connection.load_full().filter(|c| c.is_alive())
    }
}

/// A fixed number of lazily opened connections.
pub(crate) struct Pool {
    slots: Box<[Slot]>,
    next: AtomicUsize,
    backoff: Backoff,
    /// When the last failed attempt's wait ends, in ms after `created`; 0
    /// after a success. Read without a lock by [`Pool::is_down`].
    down_until_ms: AtomicU64,
    created: Instant,
}

impl Pool {
    pub(crate) fn new(size: usize, backoff: Backoff) -> Self {
        Self {
            slots: (0..size.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            backoff,
            down_until_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    fn ms_since_created(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the server is known to be unreachable: no connection is open
    /// and the last attempt failed less than its backoff wait ago. A sharded
    /// client in cache-only mode routes around such a server.
    pub(crate) fn is_down(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.ms_since_created(Instant::now()) < until && self.open_count() == 0
    }

    /// Open connections right now (for tests and INFO-style reporting).
    pub(crate) fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.live().is_some()).count()
    }

    fn lease(&self, index: usize, connection: Arc<Connection>) -> Lease<'_> {
        let in_flight = &self.slots[index].in_flight;
        in_flight.fetch_add(1, Ordering::Relaxed);
        Lease { connection, in_flight }
    }

    /// The slot a call should use (see the module doc).
    fn pick(&self) -> usize {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut least: Option<(usize, usize)> = None;
        let mut unopened = None;
        for i in (start..n).chain(0..start) {
            let slot = &self.slots[i];
            if slot.live().is_none() {
                unopened = unopened.or(Some(i));
                continue;
            }
            let load = slot.in_flight.load(Ordering::Relaxed);
            if load == 0 {
                return i;
            }
            if least.is_none_or(|(_, l)| load < l) {
                least = Some((i, load));
            }
        }
        unopened.or(least.map(|(i, _)| i)).unwrap_or(start)
    }

    /// A live connection for one call, opened if need be.
    pub(crate) async fn get(&self, params: &ConnectParams<'_>) -> Result<Lease<'_>> {
        let index = self.pick();
        let slot = &self.slots[index];
        if let Some(c) = slot.live() {
            return Ok(self.lease(index, c));
        }
        let mut failing = slot.reconnect.lock().await;
        if let Some(c) = slot.live() {
            return Ok(self.lease(index, c));
        }
        if let Some(at) = failing.retry_at.filter(|at| *at > Instant::now()) {
            let left = at.saturating_duration_since(Instant::now()).as_millis();
            let reason = format!("{}; next attempt in {left} ms", failing.last_error);
            drop(failing);
            return self.any_live().ok_or_else(|| Error::Connect { addr: params.addr.to_string(), reason });
        }
        match Connection::open(params).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                slot.connection.store(Some(Arc::clone(&conn)));
                *failing = Failing::default();
                self.down_until_ms.store(0, Ordering::Relaxed);
                Ok(self.lease(index, conn))
            }
            Err(e) => {
                failing.failures = failing.failures.saturating_add(1);
                let retry_at = Instant::now() + self.backoff.draw(failing.failures);
                failing.retry_at = Some(retry_at);
                self.down_until_ms.store(self.ms_since_created(retry_at).max(1), Ordering::Relaxed);
                failing.last_error = e.to_string();
                drop(failing);
                // Another slot may still reach the server (a full accept
                // queue, a busy rejection); if none does, say why.
                self.any_live().ok_or(e)
            }
        }
    }

    fn any_live(&self) -> Option<Lease<'_>> {
        self.slots.iter().enumerate().find_map(|(i, s)| s.live().map(|c| self.lease(i, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_are_drawn_from_their_upper_half() {
        let b = Backoff { initial: Duration::from_millis(50), max: Duration::from_secs(5) };
        let ceilings: Vec<u128> = (1..=10).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.ceiling(u32::MAX), b.max, "no overflow after many failures");
        for n in 1..12 {
            let d = b.draw(n);
            assert!(d >= b.ceiling(n) / 2 && d <= b.ceiling(n), "{d:?} for {n}");
        }
    }
}
