//! `allkeys-tinylfu`'s fading: whether an idle key keeps the standing its
//! request count gives it, chosen while the server runs by two miniature
//! simulations of the cache.
//!
//! # Why
//!
//! The sketch (see `evict.rs`) remembers counts until its periodic halving,
//! ten times the keys the limit holds in requests. When the hot keys change
//! (a new day's items, a release's pages), yesterday's hot keys keep their
//! counts that long and the new ones, which start at zero, are refused
//! admission or evicted first: on the `eviction` suite's shifting trace at a
//! tenth of the working set, TinyLFU hit 0.64 where plain LRU hit 0.67.
//! *Fading* the count of an idle key (halved for every [`FADE_EPOCHS`]
//! epochs since its last request, an epoch being an eighth of the limit's
//! keys in requests) lets the old hot keys go (0.675 on that trace) but
//! costs 2.8 points on a steady Zipf trace, where keys of middling
//! popularity are idle that long between requests too. Neither ranking wins
//! everywhere, so the cache runs the one that is doing better on its own
//! recent requests.
//!
//! # Miniature simulations
//!
//! As in Waldspurger, Saemundsson, Ahmad and Park, "Cache Modeling and
//! Optimization using Miniature Simulations" (USENIX ATC 2017): keys whose
//! hash falls in one [`SAMPLE`]th of the hash space are replayed into two
//! small caches of one [`SAMPLE`]th of the bytes the limit leaves for keys,
//! one ranking by the count alone and one by the faded count, each with the
//! main cache's rules (sampled victims, admission only for a key requested
//! more often than the first victim, counts from the shared sketch). Every
//! [`WINDOW`] sampled reads the main cache switches to the ranking whose
//! small cache hit more; the counts are halved at each switch point, so the
//! last few windows decide. A spatial sample keeps each sampled key's whole
//! history, which is why hit ratios of a 64th-sized cache follow the full
//! one's (the paper reports errors under 1 point at rates of 1/100).
//!
//! What the small caches do not see: deletions and expiries (both rankings
//! miss them alike), and writes whose key the main cache held but a small
//! cache did not (they are inserts there).
//!
//! # Cost
//!
//! One read or write in [`SAMPLE`] takes a mutex with `try_lock`: when
//! another thread holds it the sample is skipped, so no read waits for it.
//! The small caches hold about 2 / [`SAMPLE`] of the main cache's keys, at
//! about 40 bytes each (a hash-map slot and a vector entry) before their
//! tables round up to powers of two: about 2 bytes per main-cache key at
//! 80,000 keys, under 4 at 2,000 (`replay::simulate`'s test checks that).
//! They count against the memory limit as they grow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, TryLockError};

use super::evict::{FrequencySketch, admits};

/// One key in this many is simulated.
pub const SAMPLE: u64 = 64;
/// Sampled reads between two choices of ranking.
pub const WINDOW: u64 = 1024;
/// A faded count halves for every this many idle epochs.
pub const FADE_EPOCHS: u32 = 2;
/// Victims drawn per eviction in a small cache, as in the main one.
const DRAWS: usize = 5;

/// A key's rank under either ranking: its estimated request count, faded by
/// `idle` epochs if `fading`. The lowest rank is evicted first.
pub fn rank(estimate: u8, idle: u8, fading: bool) -> u8 {
    if fading { estimate >> (u32::from(idle) / FADE_EPOCHS).min(4) } else { estimate }
}

/// Whether the key with `hash` is in the simulated sample.
fn sampled(hash: u64) -> bool {
    // The top bits: shards take the low ones, the trie the next ones.
    hash >> 58 == 0
}

/// The two small caches and the ranking the main cache uses now.
#[derive(Default)]
pub struct Fade {
    caches: Mutex<Caches>,
    fading: AtomicBool,
}

impl std::fmt::Debug for Fade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the tables: thousands of entries.
        f.debug_struct("Fade").field("fading", &self.fading()).finish_non_exhaustive()
    }
}

/// The small caches, unless another thread holds them (the sample is then
/// skipped, so no read waits). A panic while they were held leaves them
/// usable: they are an estimate either way.
fn try_hold(caches: &Mutex<Caches>) -> Option<std::sync::MutexGuard<'_, Caches>> {
    match caches.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

#[derive(Debug)]
struct Caches {
    plain: MiniCache,
    faded: MiniCache,
    reads: u64,
    /// Bytes the caches' tables hold, as last reported.
    bytes: u64,
}

impl Default for Caches {
    fn default() -> Self {
        Self { plain: MiniCache::new(false), faded: MiniCache::new(true), reads: 0, bytes: 0 }
    }
}

impl Fade {
    /// Whether idle keys' counts fade now.
    pub fn fading(&self) -> bool {
        self.fading.load(Relaxed)
    }

    /// Counts a read of the key with `hash` (after the sketch counted it);
    /// `found` is the footprint of the key the main cache holds, if it does.
    /// A small cache that misses a key the main cache holds takes it in
    /// now: the client's SET after a miss, which the main cache's hit
    /// spared. Without this a small cache would only take in what the main
    /// cache misses, and would starve whenever the main cache ranks
    /// differently. Tables do not grow here (that would pass the limit
    /// with no write to evict): a full table makes room first.
    /// `room` gives the bytes the limit leaves for keys; both run only for
    /// a sampled key.
    pub fn read(
        &self,
        sketch: &FrequencySketch,
        hash: u64,
        found: impl FnOnce() -> Option<u64>,
        room: impl FnOnce() -> u64,
    ) {
        if !sampled(hash) {
            return;
        }
        let Some(mut guard) = try_hold(&self.caches) else { return };
        let c = &mut *guard;
        let epoch = sketch.epoch();
        let found = found();
        let room = room() / SAMPLE;
        for cache in [&mut c.plain, &mut c.faded] {
            if !cache.read(hash, epoch)
                && let Some(bytes) = found
            {
                cache.write(sketch, hash, bytes, room, epoch, false);
            }
        }
        c.reads += 1;
        if c.reads.is_multiple_of(WINDOW) {
            let (plain, faded) = (c.plain.hits, c.faded.hits);
            if plain != faded {
                self.fading.store(faded > plain, Relaxed);
            }
            c.plain.hits /= 2;
            c.faded.hits /= 2;
        }
    }

    /// Replays a write of `bytes` (the key's footprint) under `hash` into
    /// the small caches, which hold `room` / [`SAMPLE`] bytes. Returns the
    /// change in the bytes the caches' tables hold.
    pub fn write(&self, sketch: &FrequencySketch, hash: u64, bytes: u64, room: u64) -> i64 {
        if !sampled(hash) {
            return 0;
        }
        let Some(mut c) = try_hold(&self.caches) else { return 0 };
        let room = room / SAMPLE;
        let epoch = sketch.epoch();
        c.plain.write(sketch, hash, bytes, room, epoch, true);
        c.faded.write(sketch, hash, bytes, room, epoch, true);
        let now = c.plain.table_bytes() + c.faded.table_bytes();
        let before = std::mem::replace(&mut c.bytes, now);
        // Table sizes are far below i64::MAX.
        #[allow(clippy::cast_possible_wrap)]
        let delta = now as i64 - before as i64;
        delta
    }

    /// Sets the ranking, as a window's end would.
    #[cfg(test)]
    pub fn set_fading(&self, on: bool) {
        self.fading.store(on, Relaxed);
    }

    /// Bytes the small caches' tables hold.
    pub fn bytes(&self) -> u64 {
        self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).bytes
    }
}

/// A small cache of sampled keys: what it holds, not the values.
#[derive(Debug)]
struct MiniCache {
    fading: bool,
    slots: HashMap<u64, Slot>,
    /// The keys, for drawing victims at random.
    keys: Vec<u64>,
    used: u64,
    hits: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Position in `keys`.
    index: usize,
    /// The epoch of the last request or write.
    epoch: u8,
    bytes: u64,
}

impl MiniCache {
    fn new(fading: bool) -> Self {
        Self { fading, slots: HashMap::new(), keys: Vec::new(), used: 0, hits: 0 }
    }

    /// Whether it holds the key (a hit).
    fn read(&mut self, hash: u64, epoch: u8) -> bool {
        let Some(slot) = self.slots.get_mut(&hash) else { return false };
        slot.epoch = epoch;
        self.hits += 1;
        true
    }

    /// Whether another key would make a table grow.
    fn tables_full(&self) -> bool {
        self.slots.len() >= self.slots.capacity() || self.keys.len() >= self.keys.capacity()
    }

    fn write(&mut self, sketch: &FrequencySketch, hash: u64, bytes: u64, room: u64, epoch: u8, may_grow: bool) {
        if let Some(slot) = self.slots.get_mut(&hash) {
            self.used = self.used - slot.bytes + bytes;
            slot.bytes = bytes;
            slot.epoch = epoch;
        } else if bytes <= room {
            let mut first = true;
            while self.used + bytes > room || (!may_grow && self.tables_full()) {
                let Some((victim, victim_rank)) = self.victim(sketch, epoch) else { break };
                // Admission is checked once, at the first victim, as in the main cache.
                if std::mem::take(&mut first) && !admits(sketch.estimate(hash), victim_rank) {
                    return;
                }
                self.remove(victim);
            }
            if !may_grow && self.tables_full() {
                return;
            }
            self.slots.insert(hash, Slot { index: self.keys.len(), epoch, bytes });
            self.keys.push(hash);
            self.used += bytes;
        }
        // The room shrinks when the limit is lowered.
        while self.used > room {
            let Some((victim, _)) = self.victim(sketch, epoch) else { break };
            self.remove(victim);
        }
    }

    /// The best of [`DRAWS`] random keys to evict, and its rank.
    fn victim(&self, sketch: &FrequencySketch, epoch: u8) -> Option<(u64, u8)> {
        (0..DRAWS)
            .filter_map(|_| {
                let hash = *self.keys.get(fastrand::usize(..self.keys.len().max(1)))?;
                let idle = epoch.wrapping_sub(self.slots.get(&hash)?.epoch);
                Some((hash, rank(sketch.estimate(hash), idle, self.fading), idle))
            })
            // The lowest rank; the longest idle among equals.
            .min_by_key(|&(_, r, idle)| (r, std::cmp::Reverse(idle)))
            .map(|(hash, r, _)| (hash, r))
    }

    fn remove(&mut self, hash: u64) {
        if let Some(slot) = self.slots.remove(&hash) {
            self.keys.swap_remove(slot.index);
            if let Some(moved) = self.keys.get(slot.index)
                && let Some(s) = self.slots.get_mut(moved)
            {
                s.index = slot.index;
            }
            self.used -= slot.bytes;
        }
    }

    /// Bytes its tables hold: a hash-map slot (key, value, control byte)
    /// per bucket, a vector entry per key.
    fn table_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(u64, Slot)>() + 1;
        // A table holds at most 7/8 of its buckets.
        let buckets = if self.slots.capacity() == 0 { 0 } else { (self.slots.capacity() * 8 / 7).next_power_of_two() };
        (buckets * slot + self.keys.capacity() * std::mem::size_of::<u64>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_fade_by_idle_epochs_only_when_fading() {
        assert_eq!(rank(12, 200, false), 12);
        assert_eq!(rank(12, 0, true), 12);
        assert_eq!(rank(12, 2, true), 6);
        assert_eq!(rank(15, 255, true), 0);
    }

    /// Drives the small caches as a cache-aside client would (the key is
    /// requested, then written), with every key in the sample.
    struct Driver {
        sketch: FrequencySketch,
        fade: Fade,
        /// Room for 200 keys of 100 bytes in each small cache.
        room: u64,
    }

    impl Driver {
        fn new() -> Self {
            // Epochs of 512 requests, halving every 40,960.
            Self { sketch: FrequencySketch::new(4096), fade: Fade::default(), room: SAMPLE * 200 * 100 }
        }

        fn request(&self, key: u64) {
            // Spread, and inside the sample.
            let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 6;
            assert!(sampled(hash));
            self.sketch.increment(hash);
            self.fade.read(&self.sketch, hash, || None, || self.room);
            self.fade.write(&self.sketch, hash, 100, self.room);
        }
    }

    #[test]
    fn a_moving_hot_set_turns_fading_on_and_steady_regulars_turn_it_off() {
        let d = Driver::new();
        assert!(!d.fade.fading(), "counts are whole to begin with");
        // Hot sets of 150 keys, a new one every 20,000 requests, and a
        // one-off key in every tenth request.
        let mut one_off = 1u64 << 40;
        for phase in 0..6u64 {
            for r in 0..20_000u64 {
                if r % 10 == 0 {
                    one_off += 1;
                    d.request(one_off);
                } else {
                    d.request(phase * 1_000 + (r * 7919) % 150);
                }
            }
        }
        assert!(d.fade.fading(), "yesterday's hot keys fade");
        // 150 regular keys, each requested every 4,950 requests (about ten
        // epochs idle between requests), among one-off keys: whole counts
        // keep the regulars, faded ones let the one-offs push them out.
        for r in 0..150_000u64 {
            if r % 33 == 0 {
                d.request((1 << 30) | ((r / 33) % 150));
            } else {
                one_off += 1;
                d.request(one_off);
            }
        }
        assert!(!d.fade.fading(), "regulars keep their counts");
    }

    #[test]
    fn a_read_takes_in_what_the_main_cache_holds_without_growing_tables() {
        let d = Driver::new();
        for key in 0..20 {
            d.request(key);
        }
        let holds = |hash: u64| {
            let c = d.fade.caches.lock().unwrap();
            (c.plain.slots.contains_key(&hash), c.faded.slots.contains_key(&hash), c.bytes)
        };
        let (_, _, bytes) = holds(0);
        let (missed, held) = (1 << 50, (1 << 50) + 1);
        for hash in [missed, held] {
            d.sketch.increment(hash);
        }
        d.fade.read(&d.sketch, missed, || None, || d.room);
        assert_eq!(holds(missed), (false, false, bytes), "a miss waits for its write");
        d.fade.read(&d.sketch, held, || Some(100), || d.room);
        assert_eq!(holds(held), (true, true, bytes), "a key the main cache holds is taken in");
        let c = d.fade.caches.lock().unwrap();
        assert_eq!(c.plain.table_bytes() + c.faded.table_bytes(), bytes, "in the tables there were");
    }

    #[test]
    fn small_caches_hold_their_share_of_the_room_and_count_their_tables() {
        let d = Driver::new();
        for key in 0..5_000 {
            d.request(key);
        }
        let c = d.fade.caches.lock().unwrap();
        for cache in [&c.plain, &c.faded] {
            assert!(cache.used <= d.room / SAMPLE, "{} bytes in {}", cache.used, d.room / SAMPLE);
            assert_eq!(cache.used, cache.keys.len() as u64 * 100);
            assert_eq!(cache.slots.len(), cache.keys.len());
            for (i, k) in cache.keys.iter().enumerate() {
                assert_eq!(cache.slots[k].index, i, "the index finds the key");
            }
        }
        assert_eq!(c.bytes, c.plain.table_bytes() + c.faded.table_bytes());
        assert!(c.bytes > 0);
    }
}
