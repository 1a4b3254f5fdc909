//! One shard: a published persistent map plus its writer-side state.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::evict::Memory;
use super::memory::footprint;
use super::{Item, ShardMap};

/// Readers load `current` without locking; writers take `writer`, change the
/// master map (O(log n) copy-on-write) and publish a clone of it (O(1)).
pub(super) struct Shard {
    current: ArcSwap<ShardMap>,
    writer: Mutex<Writer>,
    /// Lookups that found a live key, and those that did not. Per shard, so
    /// counting them is not one cache line every reading core writes.
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
}

pub(super) struct Writer {
    map: ShardMap,
    /// The store's key hasher, to place keys already stored when a new one
    /// first shares their slot.
    hasher: RandomState,
    /// (expires_at_ms, item) for every key with a TTL, so the janitor's work is
    /// proportional to what expired.
    expiry: BTreeSet<(u64, Item)>,
    /// The store-wide totals the limit is checked against.
    memory: Arc<Memory>,
    /// Sequence number of the last journaled change applied here.
    pub(super) last_seq: u64,
    /// The best candidates drawn here and not yet evicted (the shard's own
    /// eviction pool). Only items still stored: removing or replacing an
    /// item drops it from here, so the pool never keeps memory alive.
    pool: Vec<(u64, Item)>,
    /// Items recovery loaded and [`Writer::build_staged`] has not yet put
    /// in the map, and the recovery's clock.
    staged: Vec<Item>,
    staged_now_ms: u64,
}

/// Candidates a shard's pool keeps between evictions.
const SHARD_POOL: usize = 8;

impl Shard {
    pub(super) fn new(hasher: RandomState, memory: Arc<Memory>) -> Self {
        let writer = Writer {
            map: ShardMap::default(),
            hasher,
            expiry: BTreeSet::new(),
            memory,
            last_seq: 0,
            pool: Vec::new(),
            staged: Vec::new(),
            staged_now_ms: 0,
        };
        Self {
            current: ArcSwap::from_pointee(ShardMap::default()),
            writer: Mutex::new(writer),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(super) fn load(&self) -> Arc<ShardMap> {
        self.current.load_full()
    }

    /// The published map, held by a cheap guard (for a few at once).
    pub(super) fn guard(&self) -> arc_swap::Guard<Arc<ShardMap>> {
        self.current.load()
    }

    /// Runs `f` on the published map without taking a reference to it.
    pub(super) fn with_map<R>(&self, f: impl FnOnce(&ShardMap) -> R) -> R {
        f(&self.current.load())
    }

    pub(super) fn get(&self, hash: u64, key: &[u8], now_ms: u64) -> Option<Item> {
        let map = self.current.load();
        map.get(hash, key).filter(|i| i.is_live(now_ms)).cloned()
    }

    /// Holds this shard's writers off; used to take a cut across all shards.
    pub(super) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    /// Runs `f` on the writer state without publishing. With no published
    /// version sharing its nodes, the master map is then changed in place,
    /// which is what makes bulk loading fast. Callers must [`Shard::publish`].
    pub(super) fn write_unpublished<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> R {
        f(&mut lock(&self.writer))
    }

    /// As [`Shard::write_unpublished`], with what recovery staged put in
    /// the map first: for replayed changes that read or remove a key.
    pub(super) fn write_replayed<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> R {
        let mut w = lock(&self.writer);
        w.build_staged();
        f(&mut w)
    }

    /// Makes the writer's current map visible to readers, with anything
    /// recovery staged put in it first.
    pub(super) fn publish(&self) {
        let mut w = lock(&self.writer);
        w.build_staged();
        self.current.store(Arc::new(w.map.clone()));
    }

    /// Replaces the map with `f`'s copy of it, if `f` makes one, and
    /// publishes the copy. Returns the maps replaced (the writer's and the
    /// published one) for the caller to free where it likes.
    pub(super) fn replace_map(
        &self,
        f: impl FnOnce(&ShardMap) -> Option<ShardMap>,
    ) -> Option<(ShardMap, Arc<ShardMap>)> {
        let mut w = lock(&self.writer);
        w.build_staged();
        let copy = f(&w.map)?;
        let old = std::mem::replace(&mut w.map, copy);
        let published = self.current.swap(Arc::new(w.map.clone()));
        Some((old, published))
    }

    /// Runs `f` on the writer state and publishes the result if `f` says it changed.
    pub(super) fn write<R>(&self, f: impl FnOnce(&mut Writer) -> (R, bool)) -> R {
        let mut w = lock(&self.writer);
        // Empty once recovery has published; a check of a length otherwise.
        w.build_staged();
        let (result, changed) = f(&mut w);
        if changed {
            let old = self.current.swap(Arc::new(w.map.clone()));
            drop(w);
            // Freeing the replaced version walks the nodes it alone owned; do
            // that after the lock is released, not while writers wait on it.
            drop(old);
        }
        result
    }
}

fn lock(m: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    // A panic while holding the lock cannot leave the map broken: trie
    // operations only ever replace whole slots, so every intermediate state
    // is a valid trie and the state is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    /// The live item under `key`, if any.
    pub(super) fn live(&self, hash: u64, key: &[u8], now_ms: u64) -> Option<&Item> {
        self.map.get(hash, key).filter(|i| i.is_live(now_ms))
    }

    /// Inserts or replaces, keeping the expiry index and byte count right.
    pub(super) fn put(&mut self, hash: u64, item: Item) {
        let added = footprint(&item);
        let expiry = item.expires_at_ms().map(|at| (at, item.clone()));
        let hasher = &self.hasher;
        if let Some(old) = self.map.insert(hash, item, &|k| hasher.hash_one(k)) {
            // Before indexing the new expiry: (expiry, key) may be equal for both.
            self.forget(&old);
        }
        self.count(added, expiry);
    }

    /// Counts a newly stored item's footprint, and indexes its expiry.
    fn count(&mut self, footprint: u64, expiry: Option<(u64, Item)>) {
        self.memory.data.fetch_add(footprint, Ordering::Relaxed);
        if let Some(entry) = expiry {
            self.expiry.insert(entry);
            self.memory.volatile.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Recovery: queues `item` (live or not at `now_ms`) for the map, where
    /// [`Writer::build_staged`] puts everything queued at once.
    pub(super) fn stage(&mut self, item: Item, now_ms: u64) {
        self.staged.push(item);
        self.staged_now_ms = now_ms;
    }

    /// Puts the staged items in the map, as storing them in order would: of
    /// items for one key the last wins, and removes the key if it has
    /// expired. Into an empty map (a snapshot's keys) they go as one build
    /// that allocates every node once, at its final size. Stored one at a
    /// time, a node is copied one entry larger each time it grows, and the
    /// copies left behind leave the small size classes' slabs part used: a
    /// server restarted with 1M keys held 4-5 MB (2%) more.
    pub(super) fn build_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let now_ms = self.staged_now_ms;
        if !self.map.is_empty() {
            for item in staged {
                let hash = self.hasher.hash_one(item.key());
                if item.is_live(now_ms) {
                    self.put(hash, item);
                } else {
                    self.remove(hash, item.key());
                }
            }
            return;
        }
        let mut entries: Vec<(Item, u64)> = staged
            .into_iter()
            .map(|item| {
                let hash = self.hasher.hash_one(item.key());
                (item, hash)
            })
            .collect();
        // A stable sort: items for one key stay in the order they were staged.
        entries.sort_by(|(a, ha), (b, hb)| ha.cmp(hb).then_with(|| a.key().cmp(b.key())));
        let mut last: Vec<(Item, u64)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match last.last_mut() {
                Some(previous) if previous.0.key() == entry.0.key() => *previous = entry,
                _ => last.push(entry),
            }
        }
        last.retain(|(item, _)| item.is_live(now_ms));
        for (item, _) in &last {
            self.count(footprint(item), item.expires_at_ms().map(|at| (at, item.clone())));
        }
        self.map = ShardMap::from_entries(last);
    }

    /// Removes `key`; returns the old item.
    pub(super) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Item> {
        let old = self.map.remove(hash, key)?;
        self.forget(&old);
        Some(old)
    }

    fn forget(&mut self, old: &Item) {
        self.unpool(old);
        if let Some(at) = old.expires_at_ms()
            && self.expiry.remove(&(at, old.clone()))
        {
            self.memory.volatile.fetch_sub(1, Ordering::Relaxed);
        }
        let freed = footprint(old);
        // Exact: every footprint subtracted was added for the same item.
        self.memory.data.fetch_sub(freed, Ordering::Relaxed);
    }

    /// The item a candidate named, if it is still stored.
    pub(super) fn get(&self, hash: u64, key: &[u8]) -> Option<&Item> {
        self.map.get(hash, key)
    }

    /// Some stored item.
    pub(super) fn any(&self) -> Option<&Item> {
        self.map.iter().next()
    }

    /// Keys here a policy may evict: those with a TTL if `volatile`, else all.
    pub(super) fn evictable(&self, volatile: bool) -> usize {
        if volatile { self.expiry.len() } else { self.map.len() }
    }

    fn unpool(&mut self, old: &Item) {
        if !self.pool.is_empty() {
            self.pool.retain(|(_, p)| !p.same(old));
        }
    }

    /// The best victim by `score` (higher goes first) among this shard's
    /// pool of earlier candidates and `samples` new draws, in runs of up to
    /// `run` neighbours (see [`super::Trie::sample`]); only keys with a TTL
    /// if `volatile`. The best [`SHARD_POOL`] of the rest stay in the pool.
    /// Callers draw only from shards with several times `samples` keys the
    /// policy may evict, so draws rarely repeat a key.
    ///
    /// Pooled candidates keep the score they were drawn with, as in Redis's
    /// pool (scoring them again would cost a cache miss each); only the one
    /// chosen is scored again, and if it was used since it goes back with
    /// its new score and the next best is tried. The victim comes with that
    /// fresh score.
    pub(super) fn best_sampled(
        &mut self,
        samples: usize,
        run: usize,
        volatile: bool,
        score: impl Fn(&Item) -> u64,
    ) -> Option<(u64, Item)> {
        let mut pool = std::mem::take(&mut self.pool);
        pool.retain(|(_, i)| !volatile || i.expires_at_ms().is_some());
        let mut consider = |item: &Item| {
            let s = score(item);
            if pool.iter().any(|(_, p)| p.same(item)) {
                return;
            }
            // Full: one more than kept, since the best is about to leave.
            if pool.len() > SHARD_POOL {
                let worst = pool.iter().enumerate().min_by_key(|(_, (p, _))| *p).map(|(i, (p, _))| (i, *p));
                match worst {
                    Some((i, p)) if p < s => _ = pool.swap_remove(i),
                    _ => return,
                }
            }
            pool.push((s, item.clone()));
        };
        let mut drawn: Vec<&Item> = Vec::with_capacity(samples);
        // Bounded: the keys with a TTL may be few among the rest.
        for _ in 0..samples * 4 {
            if drawn.len() >= samples {
                break;
            }
            self.map.sample(fastrand::u64(..), (samples - drawn.len()).min(run), |item| {
                if !volatile || item.expires_at_ms().is_some() {
                    drawn.push(item);
                }
            });
        }
        super::item::touch_all(drawn.iter().copied());
        for item in drawn {
            consider(item);
        }
        let mut best = None;
        for _ in 0..=SHARD_POOL {
            let Some(at) = pool.iter().enumerate().max_by_key(|(_, (p, _))| *p).map(|(i, _)| i) else { break };
            let (was, item) = pool.swap_remove(at);
            let now = score(&item);
            if now >= was {
                best = Some((now, item));
                break;
            }
            pool.push((now, item));
        }
        self.pool = pool;
        best
    }

    /// The key in this shard expiring soonest.
    pub(super) fn soonest_expiring(&self) -> Option<&Item> {
        self.expiry.first().map(|(_, item)| item)
    }

    /// Removes up to `budget` keys whose expiry is at or before `now_ms`.
    /// Returns (removed, whether more are due).
    pub(super) fn reclaim(&mut self, now_ms: u64, budget: usize) -> (usize, bool) {
        let mut removed = 0;
        while let Some((at, key)) = self.expiry.first().cloned() {
            if at > now_ms {
                return (removed, false);
            }
            if removed == budget {
                return (removed, true);
            }
            self.expiry.pop_first();
            // The index mirrors the map, but only remove what is really due.
            let hash = self.hasher.hash_one(key.key());
            if self.map.get(hash, key.key()).is_some_and(|item| item.expires_at_ms() == Some(at))
                && let Some(old) = self.map.remove(hash, key.key())
            {
                self.unpool(&old);
                // Out of the index already: only the count and the bytes.
                self.memory.volatile.fetch_sub(1, Ordering::Relaxed);
                let freed = footprint(&old);
                self.memory.data.fetch_sub(freed, Ordering::Relaxed);
                removed += 1;
            }
        }
        (removed, false)
    }
}
