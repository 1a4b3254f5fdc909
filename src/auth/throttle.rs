//! Failed-AUTH accounting per source address, and lockouts.
//!
//! Each failure from an address counts within a sliding-start window; at
//! `max_failures` failures inside one window the address is locked out for
//! `lockout`, during which every AUTH from it is refused without spending
//! argon2 time. A success clears the address's count. IPv6 addresses are
//! grouped by their /64, the unit one host usually controls. At most
//! [`MAX_TRACKED`] addresses are tracked; beyond that the stalest entries go.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{Clock, duration_ms_ceil};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// Brute-force settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures within `window` that trigger a lockout.
    pub max_failures: u32,
    /// The counting window.
    pub window: Duration,
    /// How long a locked-out address is refused.
    pub lockout: Duration,
    /// Added to every failed AUTH's answer.
    pub failure_delay: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            failure_delay: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
}

/// The per-address table.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    clock: Clock,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// Lockouts started since the server started.
    pub lockouts: AtomicU64,
}

fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Throttle {
    /// An empty table.
    pub fn new(config: ThrottleConfig, clock: Clock) -> Self {
        Self { config, clock, entries: Mutex::new(HashMap::new()), lockouts: AtomicU64::new(0) }
    }

    /// The settings.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(remaining)` while `ip` is locked out.
    ///
    /// # Errors
    /// The time left on the lockout.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now_ms();
        match self.entries().get(&group(ip)) {
            Some(e) if e.locked_until_ms > now => Err(Duration::from_millis(e.locked_until_ms - now)),
            _ => Ok(()),
        }
    }

    /// Counts an attempt from `ip` against its budget before it is verified,
    /// so guesses sent in parallel cannot outrun the lockout: once
    /// `max_failures` attempts are counted in the window, the next one starts
    /// the lockout instead of a verification. A success clears the count.
    ///
    /// # Errors
    /// The time left if `ip` is locked out (now, or by this attempt).
    pub fn begin_attempt(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now_ms();
        let window = duration_ms_ceil(self.config.window);
        let mut entries = self.entries();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&group(ip)) {
            entries.retain(|_, e| e.locked_until_ms > now || e.window_start_ms + window > now);
            if entries.len() >= MAX_TRACKED
                && let Some(stalest) =
                    entries.iter().min_by_key(|(_, e)| e.window_start_ms.max(e.locked_until_ms)).map(|(k, _)| *k)
            {
                entries.remove(&stalest);
            }
        }
        let e = entries.entry(group(ip)).or_insert(Entry { failures: 0, window_start_ms: now, locked_until_ms: 0 });
        if e.locked_until_ms > now {
            return Err(Duration::from_millis(e.locked_until_ms - now));
        }
        if e.window_start_ms + window <= now {
            *e = Entry { failures: 0, window_start_ms: now, locked_until_ms: 0 };
        }
        if e.failures >= self.config.max_failures {
            self.lock_out(e, now);
            return Err(self.config.lockout);
        }
        e.failures += 1;
        Ok(())
    }

    /// After a counted attempt failed: starts the lockout (and returns its
    /// length) if the budget is spent.
    pub fn record_failure(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.clock.now_ms();
        let mut entries = self.entries();
        let e = entries.get_mut(&group(ip))?;
        if e.failures >= self.config.max_failures && e.locked_until_ms <= now {
            self.lock_out(e, now);
            return Some(self.config.lockout);
        }
        None
    }

    fn lock_out(&self, e: &mut Entry, now: u64) {
        e.locked_until_ms = now + duration_ms_ceil(self.config.lockout);
        e.failures = 0;
        e.window_start_ms = now;
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Clears `ip`'s failures after a successful AUTH.
    pub fn record_success(&self, ip: IpAddr) {
        self.entries().remove(&group(ip));
    }

    /// Addresses locked out right now.
    pub fn locked_now(&self) -> usize {
        let now = self.clock.now_ms();
        self.entries().values().filter(|e| e.locked_until_ms > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> (Throttle, Clock) {
        let clock = Clock::manual();
        let config = ThrottleConfig {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
            failure_delay: Duration::ZERO,
        };
        (Throttle::new(config, clock.clone()), clock)
    }

    /// A whole failed attempt.
    fn fail(t: &Throttle, ip: IpAddr) -> Option<Duration> {
        t.begin_attempt(ip).ok()?;
        t.record_failure(ip)
    }

    /// Regression: 50 guesses sent at once were all verified; only finished
    /// failures counted.
    #[test]
    fn attempts_in_flight_count_against_the_budget() {
        let (t, _) = throttle();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(t.begin_attempt(ip).is_ok());
        }
        assert_eq!(t.begin_attempt(ip), Err(Duration::from_secs(30)), "the fourth, before any finished");
        assert_eq!(t.lockouts.load(Ordering::Relaxed), 1);
        assert_eq!(t.record_failure(ip), None, "already locked out");
        assert!(t.begin_attempt(ip).is_err());
    }

    #[test]
    fn lockout_after_max_failures_then_recovery() {
        let (t, clock) = throttle();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(fail(&t, ip), None);
        assert_eq!(fail(&t, ip), None);
        assert_eq!(fail(&t, ip), Some(Duration::from_secs(30)));
        assert_eq!(t.check(ip), Err(Duration::from_secs(30)));
        assert!(t.check("10.0.0.2".parse().unwrap()).is_ok(), "other addresses are unaffected");
        clock.advance(Duration::from_secs(30));
        assert!(t.check(ip).is_ok());
        assert_eq!(t.locked_now(), 0);
    }

    #[test]
    fn failures_outside_the_window_and_successes_reset_the_count() {
        let (t, clock) = throttle();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        fail(&t, ip);
        fail(&t, ip);
        clock.advance(Duration::from_secs(11));
        assert_eq!(fail(&t, ip), None, "a new window started");
        fail(&t, ip);
        t.record_success(ip);
        assert_eq!(fail(&t, ip), None);
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let (t, _) = throttle();
        for i in 1..=3 {
            fail(&t, format!("2001:db8:1:2::{i}").parse().unwrap());
        }
        assert!(t.check("2001:db8:1:2::ffff".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let (t, _) = throttle();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            fail(&t, IpAddr::V4(i.into()));
        }
        assert!(t.entries().len() <= MAX_TRACKED);
    }
}
