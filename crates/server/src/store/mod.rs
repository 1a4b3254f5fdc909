//! The in-memory keyspace: sharded persistent maps behind `ArcSwap`.
//!
//! - The keyspace is split over a power-of-two number of shards by the low
//!   bits of a keyed 64-bit hash of the key.
//! - Each shard publishes its current map, a persistent hash trie indexed by
//!   the hash's high bits ([`Trie`]), through an `ArcSwap`: readers load it
//!   without any lock and never wait for writers.
//! - Writers of one shard serialize on a mutex, apply an O(log n)
//!   copy-on-write change to the shard's master map and publish a clone of
//!   it (an O(1) pointer copy). No write copies a whole shard.
//! - Loading every shard's `Arc` is a consistent per-shard cut at no cost,
//!   which is what snapshots will serialize.
//! - Expiry is an absolute Unix millisecond time. Expired entries are never
//!   returned (checked on every read) and are removed by
//!   [`Store::reclaim_expired`], which walks a per-shard index ordered by
//!   expiry, so its work is proportional to what has expired.
//!
//! Values are opaque bytes: the server stores exactly what clients sent.
//!
//! Durability hooks in through a [`Journal`]: every change is appended to it
//! while the shard's writer lock is held, before it is applied, so the
//! journal's order of changes to one key is the order they were applied in,
//! and a change the journal refuses is not applied. [`Store::cut`] holds every
//! shard's writer lock for the instant it takes to load each map and read the
//! journal's position, which gives snapshots an exact sequence-number cut.

mod defrag;
mod evict;
mod fade;
mod item;
mod memory;
mod scan;
mod shard;
mod trie;

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub use cryptomem_util::clock::{Clock, deadline, duration_ms_ceil};
pub use defrag::{DefragPass, DefragTrigger};
pub use evict::{EvictionPolicy, FrequencySketch, Memory, UnknownPolicy};
pub use item::Item;
pub use memory::{alloc_size, footprint, footprint_of};
pub use scan::{KeyScan, Page, PageLimits};
use shard::Shard;
pub use trie::Trie;

use arc_swap::ArcSwapOption;
use evict::{Candidate, TinyLfu, accessed, fresh, rank_in_score};
use item::access_tick;

/// When [`Store::set`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always.
    #[default]
    Always,
    /// Only if the key does not exist (or has expired).
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
    /// Only if the key's version is this one; 0 means "only if absent".
    IfVersion(u64),
}

/// What [`Store::delete_if_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionedDelete {
    /// The key had the version and is gone.
    Deleted,
    /// No such key, and none was expected (version 0).
    Missing,
    /// The key's version (0: absent) is not the one given.
    Conflict,
}

/// A change to one key, as the store hands it to its [`Journal`] and takes
/// it back at recovery. The store defines it; how it is stored on disk is
/// the journal's business (`persist::frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The key now holds `value` (still sealed), expiring at `expires_at_ms`.
    Set {
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
        /// Absolute expiry in Unix ms.
        expires_at_ms: Option<u64>,
    },
    /// The key is gone.
    Delete {
        /// Key bytes.
        key: &'a [u8],
    },
    /// The key now expires at `expires_at_ms`.
    Expire {
        /// Key bytes.
        key: &'a [u8],
        /// Absolute expiry in Unix ms.
        expires_at_ms: u64,
    },
    /// The key no longer expires.
    Persist {
        /// Key bytes.
        key: &'a [u8],
    },
}

/// Where the store records every change before applying it.
pub trait Journal: Send + Sync {
    /// Appends `change`; returns its sequence number.
    ///
    /// # Errors
    /// [`StoreError::Journal`] when the change cannot be recorded; the store
    /// then does not apply it.
    fn append(&self, change: Change<'_>) -> Result<u64, StoreError>;
}

/// What a write did, and the journal position a caller waits on to know it
/// is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Written<T> {
    /// The command's answer.
    pub outcome: T,
    /// The sequence number the journal gave the change; 0 when nothing was
    /// journaled (the write changed nothing, or the store has no journal).
    pub seq: u64,
}

impl<T> Written<T> {
    fn unchanged(outcome: T) -> Self {
        Self { outcome, seq: 0 }
    }
}

/// A write the store refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The journal cannot record changes (I/O failure, shutting down); reads
    /// still work. The cause is the journal's own error type.
    #[error("writes are disabled: {0}")]
    Journal(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The write needs memory the limit does not leave, and the policy
    /// allows no (or finds no) key to evict.
    #[error("command not allowed when used memory > 'maxmemory' ({used} > {limit} bytes, policy {policy})")]
    OutOfMemory {
        /// What counted against the limit.
        used: u64,
        /// The limit.
        limit: u64,
        /// The policy in force.
        policy: EvictionPolicy,
    },
}

/// Every shard's map at one instant, and the journal position of that instant:
/// all changes with a sequence number up to `seq` are in the maps, none after.
#[derive(Debug, Clone)]
pub struct Cut {
    /// One map per shard.
    pub maps: Vec<Arc<ShardMap>>,
    /// Per shard, the sequence number of the last change applied to it.
    pub shard_seqs: Vec<u64>,
    /// The cut's sequence number.
    pub seq: u64,
}

/// One shard's map: a persistent hash trie of items ([`Trie`]).
pub type ShardMap = trie::Trie;

/// What [`Store::persist`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistOutcome {
    /// No such key.
    Missing,
    /// The key had a TTL, now removed.
    Removed,
    /// The key had no TTL.
    HadNone,
}

/// The sharded keyspace. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    shards: Box<[Shard]>,
    mask: usize,
    hasher: std::hash::RandomState,
    journal: Option<Arc<dyn Journal>>,
    memory: Arc<Memory>,
    /// Request counts for `allkeys-tinylfu`; `None` under other policies.
    tinylfu: ArcSwapOption<TinyLfu>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

/// The default shard count. Not about parallelism (two writers rarely meet
/// on one shard either way) but about depth: a write copies the nodes on its
/// path through its shard's tree, and each copied node touches the reference
/// counts of up to 32 children. At 4096 shards a million keys leave about 250
/// per shard, two levels deep: a write took 1.7 us there against 2.5 us at 16
/// shards, and 0.29 against 0.83 us at 10k keys (`cargo bench --bench
/// hot_paths -- store`, with 16 put into the bench). Costs about 160 bytes
/// per shard (an empty server's resident memory at 4096 shards against 16:
/// 0.65 MiB), and up to 160 more for its eviction candidates.
pub const DEFAULT_SHARDS: usize = 4096;
/// Most bytes of memory limit per shard when the limit sets the shard
/// count (the count rounds up, so shards get half to all of it): 26 to 53
/// keys of 100-byte sealed values, enough for eviction to choose victims
/// inside a shard (four times the default 5 draws).
const LIMIT_PER_SHARD: u64 = 12 * 1024;
/// The fewest shards per serving thread the limit may leave, so that
/// writers on many cores still rarely meet on one shard.
const MIN_SHARDS_PER_THREAD: usize = 64;

/// The shard count for a store whose keys must fit in `limit` bytes (0 = no
/// limit), served by `threads` threads: [`DEFAULT_SHARDS`], or fewer when
/// the limit holds fewer than about 26 keys per default shard (under 24 MiB).
///
/// Why: eviction chooses a victim inside the shard being written only when
/// that shard holds enough keys to sample (see `evict.rs`); otherwise every
/// evicting SET costs a second shard's write. At 8 MiB, 4096 shards hold
/// about 9 keys each and 1024 hold 35: SET -P 16 at the limit went from
/// 282k to 363k ops/s (`allkeys-lru`) and from 284k to 345k
/// (`allkeys-tinylfu`); hit ratios on the `eviction` suite's traces moved
/// by up to 0.3 points for `allkeys-tinylfu` and 1.5 for `allkeys-lru` and
/// `allkeys-lfu` at 1% of the working set (a shard's own pool of
/// candidates is smaller than the store-wide one). No fewer shards:
/// shards of 140 keys cost 10% at 32 MiB against shards of 35, since each
/// write copies one more level of nodes, and they lost hit ratio (see the
/// rounding below). The shard headers the limit does not count (about 160
/// bytes each) shrink with the count.
pub fn shards_for_limit(limit: u64, threads: usize) -> usize {
    if limit == 0 {
        return DEFAULT_SHARDS;
    }
    let by_limit = usize::try_from(limit / LIMIT_PER_SHARD).unwrap_or(DEFAULT_SHARDS).max(1);
    // Rounded up: on the server (not in `replay --simulate`) `allkeys-lru`
    // lost 2 points of hit ratio at 1% of the working set with 62 keys per
    // shard, 3 with 124, none with 31.
    let by_limit = by_limit.next_power_of_two();
    let floor = threads.max(1).saturating_mul(MIN_SHARDS_PER_THREAD).next_power_of_two();
    by_limit.clamp(floor.min(DEFAULT_SHARDS), DEFAULT_SHARDS)
}
/// Most eviction samples taken from one shard per draw (neighbours in its
/// map): 5 samples then cost two walks instead of five.
const SAMPLE_RUN: usize = 3;

impl Store {
    /// A store with `shards` shards, rounded up to a power of two (at least 1).
    pub fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        let hasher = std::hash::RandomState::new();
        let memory = Arc::new(Memory::default());
        Self {
            shards: (0..n).map(|_| Shard::new(hasher.clone(), Arc::clone(&memory))).collect(),
            mask: n - 1,
            hasher,
            journal: None,
            memory,
            tinylfu: ArcSwapOption::empty(),
        }
    }

    /// The memory limit, the policy and the counters.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Sets the memory limit (0 = none) and the eviction policy. Takes effect
    /// at the next write; [`Store::evict_to_limit`] applies it at once.
    pub fn configure_memory(&self, limit: u64, policy: EvictionPolicy) {
        self.memory.set_limit(limit);
        self.memory.set_policy(policy);
        if policy == EvictionPolicy::AllKeysTinyLfu && limit > 0 {
            // Sized for the keys the limit holds at ~128 bytes each: 1/64 to
            // 1/32 of it (the counters are a power of two).
            let keys = limit / 128;
            let same =
                self.tinylfu.load().as_ref().is_some_and(|t| t.sketch.bytes() == FrequencySketch::bytes_for(keys));
            if !same {
                let old = self.tinylfu.load_full();
                self.tinylfu.store(Some(Arc::new(TinyLfu::replacing(keys, old.as_deref()))));
            }
        } else {
            self.tinylfu.store(None);
        }
        self.memory.set_policy_bytes(self.policy_bytes());
    }

    /// Under `allkeys-tinylfu`, whether idle keys' counts fade now (see
    /// `store/fade.rs`); `None` under other policies.
    pub fn tinylfu_fading(&self) -> Option<bool> {
        self.tinylfu.load().as_ref().map(|t| t.fade.fading())
    }

    /// Bytes held by the policy's own tables (`allkeys-tinylfu`'s sketch
    /// and small caches; 0 under other policies). Counted in
    /// [`Memory::used`].
    pub fn policy_bytes(&self) -> u64 {
        self.tinylfu.load().as_ref().map_or(0, |t| t.bytes())
    }

    /// The same store, journaling every change from now on. Recovery loads
    /// the data first, so what it loads is not journaled again.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Journals `change`; its sequence number, 0 without a journal.
    fn record(&self, w: &mut shard::Writer, change: Change<'_>) -> Result<u64, StoreError> {
        if let Some(j) = &self.journal {
            w.last_seq = j.append(change)?;
            return Ok(w.last_seq);
        }
        Ok(0)
    }

    /// The key's hash and its shard: the low bits pick the shard, the trie
    /// inside it indexes by the high bits.
    fn locate(&self, key: &[u8]) -> (&Shard, u64) {
        let hash = self.hasher.hash_one(key);
        (&self.shards[self.index(hash)], hash)
    }

    fn index(&self, hash: u64) -> usize {
        // Truncation is intended: only the low bits pick the shard.
        #[allow(clippy::cast_possible_truncation)]
        let i = hash as usize & self.mask;
        i
    }

    /// The index of the shard holding `key`, for callers that spread work by shard.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        self.index(self.hasher.hash_one(key))
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The live item under `key`; its value is [`Item::value`]. A read of
    /// the value (GET, MGET): counts a hit or a miss and, with a memory
    /// limit, records the access (an atomic store in the item, not a shard
    /// write). [`Store::peek`] does neither.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        let (shard, hash) = self.locate(key);
        let found = shard.get(hash, key, now_ms);
        let counter = if found.is_some() { &shard.hits } else { &shard.misses };
        counter.fetch_add(1, Relaxed);
        if self.memory.limit() > 0 {
            let tinylfu = self.tinylfu.load();
            let tick = access_tick(now_ms);
            if let Some(t) = tinylfu.as_ref() {
                let estimate = t.sketch.increment(hash);
                if let Some(item) = &found {
                    item.touch(|_| t.access_word(tick, estimate));
                }
                let footprint = || found.as_ref().map(memory::footprint);
                let room = || self.memory.limit().saturating_sub(self.memory.external());
                t.fade.read(&t.sketch, hash, footprint, room);
            } else if let Some(item) = &found {
                item.touch(|a| accessed(a, tick));
            }
        }
        found
    }

    /// The live item under `key`, without counting a hit or recording an
    /// access (EXISTS and TTL do not make a key look used, as in Redis).
    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        let (shard, hash) = self.locate(key);
        shard.get(hash, key, now_ms)
    }

    /// Lookups by [`Store::get`] that found a live key, and those that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(h, m), s| (h + s.hits.load(Relaxed), m + s.misses.load(Relaxed)))
    }

    /// Writes `value` if `condition` holds; returns whether it wrote. With a
    /// memory limit it first evicts as the policy says; under
    /// `allkeys-tinylfu` a new key may be refused admission, which answers
    /// `true` with nothing stored and counts as an eviction (`seq` 0).
    ///
    /// # Errors
    /// [`StoreError::Journal`] if the journal refuses the change,
    /// [`StoreError::OutOfMemory`] if the limit leaves no room.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        condition: SetCondition,
        now_ms: u64,
    ) -> Result<Written<bool>, StoreError> {
        let expires_at_ms = ttl.map(|t| deadline(now_ms, t));
        let (shard, hash) = self.locate(key);
        let limit = self.memory.limit();
        let footprint = memory::footprint_of(key.len(), value.len(), ttl.is_some());
        // The written key's request count, read once: for its access word
        // and for admission (0 and unused under other policies).
        let (access, estimate) = match self.tinylfu.load().as_ref() {
            Some(t) => {
                // Before the check below: a small cache's table may grow.
                let room = limit.saturating_sub(self.memory.external());
                self.memory.add_policy_bytes(t.fade.write(&t.sketch, hash, footprint, room));
                let estimate = t.sketch.estimate(hash);
                (t.access_word(access_tick(now_ms), estimate), estimate)
            }
            None => (fresh(access_tick(now_ms)), 0),
        };
        let reservation = self.reserve(limit, footprint)?;
        let evict_here = limit > 0 && self.memory.used() > limit;
        // Built before the lock: the copy and allocation need not hold writers up.
        let item = Item::with_access(key, value, expires_at_ms, access);
        let change = Change::Set { key, value, expires_at_ms };
        let item = match shard.write(|w| {
            if !allowed(w, hash, key, condition, now_ms) {
                return (Ok(Ok(Written::unchanged(false))), false);
            }
            let mut evicted = false;
            if evict_here {
                match self.evict_in_shard(w, hash, key, estimate, condition, now_ms, limit, &mut evicted) {
                    Ok(InShard::Room) => {}
                    Ok(InShard::Refused) => return (Ok(Err(None)), evicted),
                    // Handed back unused, for the way across shards.
                    Ok(InShard::NoVictim) => return (Ok(Err(Some(item))), evicted),
                    Err(e) => return (Err(e), evicted),
                }
            }
            let (result, changed) = self.put_recorded(w, hash, change, item);
            (result.map(Ok), changed || evicted)
        })? {
            Ok(written) => return Ok(written),
            Err(None) => return self.refused(reservation, limit, now_ms),
            Err(Some(item)) => item,
        };
        // This shard is too small a sample: draw from all of them.
        let new_key = || condition != SetCondition::IfPresent && shard.get(hash, key, now_ms).is_none();
        if !self.make_room_admitting(limit, estimate, new_key, now_ms)? {
            return self.refused(reservation, limit, now_ms);
        }
        shard.write(|w| {
            if !allowed(w, hash, key, condition, now_ms) {
                return (Ok(Written::unchanged(false)), false);
            }
            self.put_recorded(w, hash, change, item)
        })
    }

    /// Answers a write `allkeys-tinylfu` kept out: done, with nothing
    /// stored. Admission was checked at the first victim, before what the
    /// limit also counts grew (request buffers, the policy's own tables)
    /// was made room for, so that room is made now, once the refused
    /// write's reservation is let go: no write is acknowledged over the
    /// limit, refused or not.
    fn refused(
        &self,
        reservation: Option<Reservation<'_>>,
        limit: u64,
        now_ms: u64,
    ) -> Result<Written<bool>, StoreError> {
        drop(reservation);
        if limit > 0 && self.memory.used() > limit {
            self.make_room(limit, now_ms, |_| true)?;
        }
        Ok(Written::unchanged(true))
    }

    /// Reserves a write's `need` bytes against `limit` (none without a
    /// limit), so concurrent writers cannot pass the limit together.
    ///
    /// # Errors
    /// `OutOfMemory` for a write that would not fit even if every key were
    /// evicted: refused before any is.
    fn reserve(&self, limit: u64, need: u64) -> Result<Option<Reservation<'_>>, StoreError> {
        if limit == 0 {
            return Ok(None);
        }
        if need.saturating_add(self.memory.external()) > limit {
            let policy = self.memory.policy();
            return Err(StoreError::OutOfMemory { used: self.memory.used() + need, limit, policy });
        }
        Ok(Some(Reservation::new(&self.memory, need)))
    }

    /// Journals `change` (a `Set` of `item`) and stores `item`.
    fn put_recorded(
        &self,
        w: &mut shard::Writer,
        hash: u64,
        change: Change<'_>,
        item: Item,
    ) -> (Result<Written<bool>, StoreError>, bool) {
        match self.record(w, change) {
            Ok(seq) => {
                w.put(hash, item.versioned(seq));
                (Ok(Written { outcome: true, seq }), true)
            }
            Err(e) => (Err(e), false),
        }
    }

    /// Evicts from the shard being written until the write fits, inside
    /// that write: one lock, one publish, and no other shard's map loaded.
    /// Keys are spread over shards by their hash, so the shard's keys are as
    /// random a sample of the keyspace as any draw across shards. Sets
    /// `evicted` once a key is gone (the shard must then be published).
    #[allow(clippy::too_many_arguments)]
    fn evict_in_shard(
        &self,
        w: &mut shard::Writer,
        hash: u64,
        key: &[u8],
        estimate: u8,
        condition: SetCondition,
        now_ms: u64,
        limit: u64,
        evicted: &mut bool,
    ) -> Result<InShard, StoreError> {
        let policy = self.memory.policy();
        if policy == EvictionPolicy::NoEviction {
            return Err(StoreError::OutOfMemory { used: self.memory.used(), limit, policy });
        }
        if !policy.ranks_within_a_shard() {
            return Ok(InShard::NoVictim);
        }
        let tinylfu = self.tinylfu.load();
        let tinylfu = tinylfu.as_deref().filter(|_| policy == EvictionPolicy::AllKeysTinyLfu);
        // Admission is checked once, at the first victim.
        let mut first = true;
        let tick = access_tick(now_ms);
        // A shard with fewer keys than four times the draws is too small a
        // sample (at twice, `allkeys-lru` lost 2 points of hit ratio on the
        // shifting trace at 5% of the working set): eviction then draws
        // from all shards instead.
        let draws = self.memory.samples();
        while self.memory.used() > limit {
            if w.evictable(policy.volatile_only()) < draws * 4 {
                return Ok(InShard::NoVictim);
            }
            let victim = w.best_sampled(draws, SAMPLE_RUN, policy.volatile_only(), |item| {
                Self::victim_score(policy, tinylfu, item, tick)
            });
            let Some((score, victim)) = victim else { return Ok(InShard::NoVictim) };
            let victim_hash = self.hasher.hash_one(victim.key());
            // A pooled candidate may have been overwritten or deleted since
            // it was drawn. Its access word then stops moving, so it looks
            // idle, and evicting by its key would remove the key's new
            // (often just requested) item. The pool dropped it; draw again.
            if !w.live(victim_hash, victim.key(), now_ms).is_some_and(|current| current.same(&victim)) {
                continue;
            }
            // The victim's rank is in the score it was just chosen on, as
            // on the way across shards: no second hash and sketch read.
            let refused = std::mem::take(&mut first)
                && refuses(tinylfu, estimate, rank_in_score(score), || {
                    condition != SetCondition::IfPresent && w.live(hash, key, now_ms).is_none()
                });
            if refused {
                self.memory.evicted.fetch_add(1, Relaxed);
                return Ok(InShard::Refused);
            }
            self.record(w, Change::Delete { key: victim.key() })?;
            w.remove(victim_hash, victim.key());
            *evicted = true;
            self.memory.evicted.fetch_add(1, Relaxed);
            #[cfg(test)]
            self.memory.in_shard.fetch_add(1, Relaxed);
        }
        self.memory.note_peak();
        Ok(InShard::Room)
    }

    /// How good a victim `item` is under `policy` at `tick`: higher goes first.
    fn victim_score(policy: EvictionPolicy, tinylfu: Option<&TinyLfu>, item: &Item, tick: u32) -> u64 {
        match tinylfu.filter(|_| policy == EvictionPolicy::AllKeysTinyLfu) {
            Some(t) => t.score(item.access(), tick),
            None => policy.score(item.access(), item.expires_at_ms(), tick),
        }
    }

    /// Deletes `key`; returns whether a live key was there.
    ///
    /// # Errors
    /// [`StoreError`] if the journal refuses the change.
    pub fn delete(&self, key: &[u8], now_ms: u64) -> Result<Written<bool>, StoreError> {
        let (shard, hash) = self.locate(key);
        shard.write(|w| match w.live(hash, key, now_ms) {
            Some(_) => {
                let seq = match self.record(w, Change::Delete { key }) {
                    Ok(seq) => seq,
                    Err(e) => return (Err(e), false),
                };
                w.remove(hash, key);
                (Ok(Written { outcome: true, seq }), true)
            }
            // An expired entry goes without a journal record: replay drops it too.
            None => (Ok(Written::unchanged(false)), w.remove(hash, key).is_some()),
        })
    }

    /// Deletes a live key only if its version is `version` (see
    /// [`VersionedDelete`]).
    ///
    /// # Errors
    /// [`StoreError`] if the journal refuses the change.
    pub fn delete_if_version(
        &self,
        key: &[u8],
        version: u64,
        now_ms: u64,
    ) -> Result<Written<VersionedDelete>, StoreError> {
        let (shard, hash) = self.locate(key);
        shard.write(|w| match w.live(hash, key, now_ms).map(Item::version) {
            Some(current) if current == version => {
                let seq = match self.record(w, Change::Delete { key }) {
                    Ok(seq) => seq,
                    Err(e) => return (Err(e), false),
                };
                w.remove(hash, key);
                (Ok(Written { outcome: VersionedDelete::Deleted, seq }), true)
            }
            None if version == 0 => (Ok(Written::unchanged(VersionedDelete::Missing)), false),
            _ => (Ok(Written::unchanged(VersionedDelete::Conflict)), false),
        })
    }

    /// Whether a live key exists.
    pub fn exists(&self, key: &[u8], now_ms: u64) -> bool {
        self.peek(key, now_ms).is_some()
    }

    /// Sets a new TTL on a live key; returns whether the key existed.
    ///
    /// # Errors
    /// [`StoreError`] if the journal refuses the change.
    pub fn expire(&self, key: &[u8], ttl: Duration, now_ms: u64) -> Result<Written<bool>, StoreError> {
        let at = deadline(now_ms, ttl);
        let (shard, hash) = self.locate(key);
        shard.write(|w| match w.live(hash, key, now_ms).cloned() {
            Some(item) => {
                let seq = match self.record(w, Change::Expire { key, expires_at_ms: at }) {
                    Ok(seq) => seq,
                    Err(e) => return (Err(e), false),
                };
                w.put(hash, item.with_expiry(Some(at)).versioned(seq));
                (Ok(Written { outcome: true, seq }), true)
            }
            None => (Ok(Written::unchanged(false)), false),
        })
    }

    /// Removes the TTL of a live key.
    ///
    /// # Errors
    /// [`StoreError`] if the journal refuses the change.
    pub fn persist(&self, key: &[u8], now_ms: u64) -> Result<Written<PersistOutcome>, StoreError> {
        let (shard, hash) = self.locate(key);
        shard.write(|w| match w.live(hash, key, now_ms).cloned() {
            None => (Ok(Written::unchanged(PersistOutcome::Missing)), false),
            Some(item) if item.expires_at_ms().is_none() => (Ok(Written::unchanged(PersistOutcome::HadNone)), false),
            Some(item) => {
                let seq = match self.record(w, Change::Persist { key }) {
                    Ok(seq) => seq,
                    Err(e) => return (Err(e), false),
                };
                w.put(hash, item.with_expiry(None).versioned(seq));
                (Ok(Written { outcome: PersistOutcome::Removed, seq }), true)
            }
        })
    }

    /// Applies the change numbered `seq` read back from the journal, without
    /// journaling it; the key's version becomes `seq`. Idempotent for the
    /// sequences recovery feeds it; a `Set` whose expiry has passed removes
    /// the key. Recovery only: readers see nothing until [`Store::publish_all`].
    pub fn apply_replayed(&self, change: Change<'_>, seq: u64, now_ms: u64) {
        match change {
            Change::Set { key, value, expires_at_ms } => self.load(key, value, expires_at_ms, seq, now_ms),
            Change::Delete { key } => {
                let (shard, hash) = self.locate(key);
                shard.write_replayed(|w| w.remove(hash, key));
            }
            Change::Expire { key, expires_at_ms } => {
                let (shard, hash) = self.locate(key);
                shard.write_replayed(|w| match w.live(hash, key, now_ms).cloned() {
                    Some(item) if expires_at_ms > now_ms => {
                        w.put(hash, item.with_expiry(Some(expires_at_ms)).versioned(seq));
                    }
                    _ => {
                        w.remove(hash, key);
                    }
                });
            }
            Change::Persist { key } => {
                let (shard, hash) = self.locate(key);
                shard.write_replayed(|w| {
                    if let Some(item) = w.live(hash, key, now_ms).cloned() {
                        w.put(hash, item.with_expiry(None).versioned(seq));
                    }
                });
            }
        }
    }

    /// Inserts a key read from a snapshot or the journal, at `version`,
    /// without journaling it; an already expired one removes the key instead.
    /// Recovery only: readers see nothing until [`Store::publish_all`], and
    /// the key is only staged until then (or until a replayed change that
    /// reads or removes keys in its shard), so that a shard's keys from a
    /// snapshot are built into its map at once.
    pub fn load(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>, version: u64, now_ms: u64) {
        let item = Item::new(key, value, expires_at_ms).versioned(version);
        let (shard, _) = self.locate(key);
        shard.write_unpublished(|w| w.stage(item, now_ms));
    }

    /// Publishes every shard after [`Store::load`] / [`Store::apply_replayed`].
    /// Publishing builds the keys each shard staged into its map, so the
    /// shards are spread over a thread per core: on one thread, building 1M
    /// keys' maps made a restart a fifth slower than inserting them on the
    /// recovery's applying threads had been.
    pub fn publish_all(&self) {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let per_thread = self.shards.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for part in self.shards.chunks(per_thread) {
                scope.spawn(|| part.iter().for_each(Shard::publish));
            }
        });
    }

    /// Every shard's map at one instant. All writer locks are held while
    /// `position` runs (it returns the journal's last sequence number and may
    /// start a new log segment) and the maps are loaded; nothing is copied.
    pub fn cut(&self, position: impl FnOnce() -> u64) -> Cut {
        let guards: Vec<_> = self.shards.iter().map(Shard::lock_writer).collect();
        let seq = position();
        let maps = self.shards.iter().map(Shard::load).collect();
        let shard_seqs = guards.iter().map(|g| g.last_seq).collect();
        drop(guards);
        Cut { maps, shard_seqs, seq }
    }

    /// A listing of the keys as they are now, walked page by page
    /// ([`KeyScan`]): later writes do not change what it returns.
    pub fn scan(&self) -> KeyScan {
        KeyScan::new(self.shards.iter().map(Shard::load).collect())
    }

    /// The expiry of a live key: `None` if missing, `Some(None)` if it never expires.
    pub fn expiry(&self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        self.peek(key, now_ms).map(|i| i.expires_at_ms())
    }

    /// Number of stored keys, including expired ones not yet reclaimed (as Redis's DBSIZE).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A consistent cut of every shard, for snapshots.
    pub fn shard_maps(&self) -> Vec<Arc<ShardMap>> {
        self.shards.iter().map(Shard::load).collect()
    }

    /// Evicts across shards until the reserved write fits under `limit`.
    /// False when `allkeys-tinylfu` keeps the new key (`hash`) out because it
    /// is requested less often than the key it would replace; the write is
    /// then answered as done and counts as an eviction.
    fn make_room_admitting(
        &self,
        limit: u64,
        estimate: u8,
        new_key: impl FnOnce() -> bool,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        if limit == 0 || self.memory.used() <= limit {
            return Ok(true);
        }
        let tinylfu = self.tinylfu.load();
        let tinylfu = tinylfu.as_deref().filter(|_| self.memory.policy() == EvictionPolicy::AllKeysTinyLfu);
        // Admission is checked once, at the first victim.
        let mut new_key = Some(new_key);
        let admitted = self.make_room(limit, now_ms, |victim| {
            let Some(is_new) = new_key.take() else { return true };
            !refuses(tinylfu, estimate, rank_in_score(victim.score), is_new)
        })?;
        if !admitted {
            self.memory.evicted.fetch_add(1, Relaxed);
        }
        Ok(admitted)
    }

    /// Evicts until what counts against `limit` fits under it. `admit` sees
    /// each victim before it goes; false keeps the victim and stops (returns
    /// false). Errors with `OutOfMemory` when nothing may or can be evicted.
    fn make_room(
        &self,
        limit: u64,
        now_ms: u64,
        mut admit: impl FnMut(&Candidate) -> bool,
    ) -> Result<bool, StoreError> {
        let mut fruitless = 0;
        while self.memory.used() > limit {
            let policy = self.memory.policy();
            let oom = || StoreError::OutOfMemory { used: self.memory.used(), limit, policy };
            if policy == EvictionPolicy::NoEviction || fruitless > 64 {
                return Err(oom());
            }
            let Some(victim) = self.pick_victim(policy, now_ms) else {
                return Err(oom());
            };
            if !admit(&victim) {
                return Ok(false);
            }
            if self.evict(&victim)? {
                fruitless = 0;
            } else {
                fruitless += 1;
            }
        }
        self.memory.note_peak();
        Ok(true)
    }

    /// Evicts until the keyspace and buffers fit under the limit (after
    /// recovery, or when the limit is lowered). Returns how many keys went.
    ///
    /// # Errors
    /// `OutOfMemory` if the policy cannot get under the limit; the journal's
    /// error if it cannot record an eviction.
    pub fn evict_to_limit(&self, now_ms: u64) -> Result<u64, StoreError> {
        let before = self.memory.evicted();
        let limit = self.memory.limit();
        if limit > 0 {
            self.make_room(limit, now_ms, |_| true)?;
        }
        Ok(self.memory.evicted() - before)
    }

    /// The next victim: [`Memory::samples`] keys drawn from random shards
    /// (up to [`SAMPLE_RUN`] neighbours per shard) join the candidate pool
    /// and the best one leaves it.
    fn pick_victim(&self, policy: EvictionPolicy, now_ms: u64) -> Option<Candidate> {
        let volatile = policy.volatile_only();
        if volatile && self.memory.volatile.load(Relaxed) == 0 {
            return None;
        }
        let tick = access_tick(now_ms);
        let n = self.shards.len();
        let tinylfu = self.tinylfu.load();
        let candidate = |shard: usize, item: &Item| Candidate {
            score: Self::victim_score(policy, tinylfu.as_deref(), item, tick),
            shard,
            key: item.key().into(),
            item: item.address(),
        };
        let samples = self.memory.samples();
        let mut found = Vec::with_capacity(samples);
        if policy != EvictionPolicy::VolatileTtl {
            // Maps loaded, then drawn from, then scored, each for all the
            // draws before the next: the cache misses of one step overlap
            // instead of following one another.
            let maps: Vec<_> = (0..samples.div_ceil(SAMPLE_RUN))
                .map(|_| {
                    let i = fastrand::usize(..n);
                    (i, self.shards[i].guard())
                })
                .collect();
            let mut drawn = Vec::with_capacity(samples);
            for (i, map) in &maps {
                map.sample(fastrand::u64(..), (samples - drawn.len()).min(SAMPLE_RUN), |item| {
                    if !volatile || item.expires_at_ms().is_some() {
                        drawn.push((*i, item));
                    }
                });
            }
            item::touch_all(drawn.iter().map(|(_, item)| *item));
            found.extend(drawn.into_iter().map(|(i, item)| candidate(i, item)));
        }
        for _ in 0..samples * 20 {
            if found.len() == samples {
                break;
            }
            let i = fastrand::usize(..n);
            if policy == EvictionPolicy::VolatileTtl {
                // The soonest expiring key of the shard: its index is ordered.
                let w = self.shards[i].lock_writer();
                if let Some(item) = w.soonest_expiring() {
                    found.push(candidate(i, item));
                }
                continue;
            }
            let want = (samples - found.len()).min(SAMPLE_RUN);
            self.shards[i].with_map(|map| {
                map.sample(fastrand::u64(..), want, |item| {
                    if !volatile || item.expires_at_ms().is_some() {
                        found.push(candidate(i, item));
                    }
                });
            });
        }
        if found.is_empty() {
            // Few keys over many shards: walk them from a random one.
            let start = fastrand::usize(..n);
            for i in (start..n).chain(0..start) {
                let w = self.shards[i].lock_writer();
                let item = if volatile { w.soonest_expiring() } else { w.any() };
                if let Some(item) = item {
                    found.push(candidate(i, item));
                    break;
                }
            }
        }
        self.memory.pool.best(found)
    }

    /// Deletes a victim (journaled, so a restart does not bring it back) if
    /// it is still stored. Returns whether it was.
    fn evict(&self, victim: &Candidate) -> Result<bool, StoreError> {
        let shard = &self.shards[victim.shard];
        let hash = self.hasher.hash_one(&victim.key);
        let evicted = shard.write(|w| {
            // Gone, or written again since it was scored (see `Candidate`).
            if w.get(hash, &victim.key).is_none_or(|current| current.address() != victim.item) {
                return (Ok(false), false);
            }
            if let Err(e) = self.record(w, Change::Delete { key: &victim.key }) {
                return (Err(e), false);
            }
            w.remove(hash, &victim.key);
            (Ok(true), true)
        })?;
        if evicted {
            self.memory.evicted.fetch_add(1, Relaxed);
        }
        Ok(evicted)
    }

    /// Removes keys expired at `now_ms`, at most `budget_per_shard` per shard
    /// per call. Returns (removed, whether any shard has more due).
    pub fn reclaim_expired(&self, now_ms: u64, budget_per_shard: usize) -> (usize, bool) {
        let mut removed = 0;
        let mut more = false;
        for shard in &self.shards {
            let (n, m) = shard.write(|w| {
                let (n, m) = w.reclaim(now_ms, budget_per_shard);
                ((n, m), n > 0)
            });
            removed += n;
            more |= m;
        }
        (removed, more)
    }
}

#[cfg(test)]
mod tests;

/// TinyLFU's admission at the limit: whether the written key (sketch
/// estimate `estimate`) is kept out rather than a victim of rank
/// `victim_rank` evicted. Only a new key can be: one requested no more often
/// than the victim ranks. `is_new` (a lookup) runs only when the rule would
/// refuse. Without a sketch (any other policy) nothing is refused.
fn refuses(tinylfu: Option<&TinyLfu>, estimate: u8, victim_rank: u8, is_new: impl FnOnce() -> bool) -> bool {
    tinylfu.is_some() && !evict::admits(estimate, victim_rank) && is_new()
}

/// Whether a write is allowed by its condition, as its shard stands.
fn allowed(w: &shard::Writer, hash: u64, key: &[u8], condition: SetCondition, now_ms: u64) -> bool {
    // A plain SET needs no lookup: the insert hands back what it replaced.
    match condition {
        SetCondition::Always => true,
        SetCondition::IfAbsent => w.live(hash, key, now_ms).is_none(),
        SetCondition::IfPresent => w.live(hash, key, now_ms).is_some(),
        SetCondition::IfVersion(v) => w.live(hash, key, now_ms).map_or(0, Item::version) == v,
    }
}

/// What [`Store::evict_in_shard`] achieved.
enum InShard {
    /// The write fits.
    Room,
    /// `allkeys-tinylfu` keeps the new key out.
    Refused,
    /// The shard holds too few keys the policy may evict to choose well.
    NoVictim,
}

/// A write's footprint, counted against the limit from its check until it
/// is stored (then the key's own footprint counts) or abandoned.
struct Reservation<'a> {
    memory: &'a Memory,
    bytes: u64,
}

impl<'a> Reservation<'a> {
    fn new(memory: &'a Memory, bytes: u64) -> Self {
        memory.reserved.fetch_add(bytes, Relaxed);
        Self { memory, bytes }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.memory.reserved.fetch_sub(self.bytes, Relaxed);
    }
}
