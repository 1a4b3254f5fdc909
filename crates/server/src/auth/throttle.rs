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

use cryptomem_util::clock::{Clock, duration_ms_ceil};

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
    /// Attempts being verified now; they hold a place in the budget.
    in_flight: u32,
    window_start_ms: u64,
    locked_until_ms: u64,
}

/// Why [`Throttle::begin_attempt`] did not reserve a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Locked out for this long.
    Locked(Duration),
    /// Other attempts in flight hold the rest of the budget.
    Wait,
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

    /// Reserves a place in `ip`'s budget for an attempt about to be verified,
    /// so guesses sent in parallel cannot outrun the lockout: failures plus
    /// attempts in flight never exceed `max_failures`. Finish every reserved
    /// attempt with [`Throttle::record_failure`] or [`Throttle::record_success`].
    ///
    /// # Errors
    /// [`Attempt::Locked`] with the time left while `ip` is locked out;
    /// [`Attempt::Wait`] while the budget is taken by attempts in flight
    /// (retry once one finishes: a success frees the budget, failures lock).
    pub fn begin_attempt(&self, ip: IpAddr) -> Result<(), Attempt> {
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
        let e = entries.entry(group(ip)).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            window_start_ms: now,
            locked_until_ms: 0,
        });
        if e.locked_until_ms > now {
            return Err(Attempt::Locked(Duration::from_millis(e.locked_until_ms - now)));
        }
        if e.window_start_ms + window <= now {
            e.failures = 0;
            e.window_start_ms = now;
        }
        if e.failures + e.in_flight >= self.config.max_failures {
            return Err(Attempt::Wait);
        }
        e.in_flight += 1;
        Ok(())
    }

    /// After a reserved attempt failed: counts it, and starts the lockout
    /// (returning its length) if the budget is spent.
    pub fn record_failure(&self, ip: IpAddr) -> Option<Duration> {
        let now = self.clock.now_ms();
        let mut entries = self.entries();
        let e = entries.get_mut(&group(ip))?;
        e.in_flight = e.in_flight.saturating_sub(1);
        e.failures += 1;
        if e.failures >= self.config.max_failures && e.locked_until_ms <= now {
            self.lock_out(e, now);
            return Some(self.config.lockout);
        }
        None
    }

    /// Gives back a reserved place without a verdict.
    pub fn release(&self, ip: IpAddr) {
        if let Some(e) = self.entries().get_mut(&group(ip)) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    fn lock_out(&self, e: &mut Entry, now: u64) {
        e.locked_until_ms = now + duration_ms_ceil(self.config.lockout);
        e.failures = 0;
        e.window_start_ms = now;
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Clears `ip`'s failures after a successful AUTH (releasing its
    /// reservation, if it made one).
    pub fn record_success(&self, ip: IpAddr, reserved: bool) {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(&group(ip)) else { return };
        e.failures = 0;
        if reserved {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        if e.in_flight == 0 && e.locked_until_ms == 0 {
            entries.remove(&group(ip));
        }
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
        assert_eq!(t.begin_attempt(ip), Err(Attempt::Wait), "the fourth, before any finished");
        assert_eq!(t.record_failure(ip), None);
        assert_eq!(t.begin_attempt(ip), Err(Attempt::Wait), "two still in flight, one failed");
        assert_eq!(t.record_failure(ip), None);
        assert_eq!(t.record_failure(ip), Some(Duration::from_secs(30)));
        assert_eq!(t.begin_attempt(ip), Err(Attempt::Locked(Duration::from_secs(30))));
        assert_eq!(t.lockouts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_success_frees_the_budget_for_attempts_waiting_behind_it() {
        let (t, _) = throttle();
        let ip: IpAddr = "10.0.0.8".parse().unwrap();
        for _ in 0..3 {
            t.begin_attempt(ip).unwrap();
        }
        assert_eq!(t.begin_attempt(ip), Err(Attempt::Wait));
        t.record_success(ip, true);
        assert!(t.begin_attempt(ip).is_ok(), "a valid token's burst is not locked out");
    }

    #[test]
    fn lockout_after_max_failures_then_recovery() {
        let (t, clock) = throttle();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(fail(&t, ip), None);
        assert_eq!(fail(&t, ip), None);
        assert_eq!(fail(&t, ip), Some(Duration::from_secs(30)));
        assert_eq!(t.check(ip), Err(Duration::from_secs(30)));
        assert_eq!(t.begin_attempt(ip), Err(Attempt::Locked(Duration::from_secs(30))));
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
        t.begin_attempt(ip).unwrap();
        t.record_success(ip, true);
        assert_eq!(fail(&t, ip), None);
        assert_eq!(fail(&t, ip), None, "the success reset the count");
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
