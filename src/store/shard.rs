//! One shard: a published persistent map plus its writer-side state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::{Entry, Item, ShardMap};

/// Bytes charged per entry beyond key and value: map node share, the entry
/// struct and the expiry index. An estimate for INFO, not an allocator count.
pub const ENTRY_OVERHEAD: u64 = 96;

/// Readers load `current` without locking; writers take `writer`, change the
/// master map (O(log n) copy-on-write) and publish a clone of it (O(1)).
pub(super) struct Shard {
    current: ArcSwap<ShardMap>,
    writer: Mutex<Writer>,
    bytes: AtomicU64,
}

pub(super) struct Writer {
    map: ShardMap,
    /// (expires_at_ms, key) for every key with a TTL, so the janitor's work is
    /// proportional to what expired.
    expiry: BTreeSet<(u64, Bytes)>,
    bytes: u64,
    /// Sequence number of the last journaled change applied here.
    pub(super) last_seq: u64,
}

impl Shard {
    pub(super) fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(ShardMap::default()),
            writer: Mutex::new(Writer { map: ShardMap::default(), expiry: BTreeSet::new(), bytes: 0, last_seq: 0 }),
            bytes: AtomicU64::new(0),
        }
    }

    pub(super) fn load(&self) -> Arc<ShardMap> {
        self.current.load_full()
    }

    pub(super) fn get(&self, key: &[u8], now_ms: u64) -> Option<Entry> {
        let map = self.current.load();
        map.get_key_value(key).map(|(item, ())| item.entry()).filter(|e| e.is_live(now_ms)).cloned()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
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

    /// Makes the writer's current map visible to readers.
    pub(super) fn publish(&self) {
        let w = lock(&self.writer);
        self.current.store(Arc::new(w.map.clone()));
        self.bytes.store(w.bytes, Ordering::Relaxed);
    }

    /// Runs `f` on the writer state and publishes the result if `f` says it changed.
    pub(super) fn write<R>(&self, f: impl FnOnce(&mut Writer) -> (R, bool)) -> R {
        let mut w = lock(&self.writer);
        let (result, changed) = f(&mut w);
        if changed {
            self.current.store(Arc::new(w.map.clone()));
            self.bytes.store(w.bytes, Ordering::Relaxed);
        }
        result
    }
}

fn lock(m: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    // A panic while holding the lock cannot leave the map half-updated: imbl
    // operations are complete or not applied, so the state is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn footprint(key: &[u8], entry: &Entry) -> u64 {
    key.len() as u64 + entry.value.len() as u64 + ENTRY_OVERHEAD
}

impl Writer {
    /// The live entry under `key`, if any.
    pub(super) fn live(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.map.get_key_value(key).map(|(item, ())| item.entry()).filter(|e| e.is_live(now_ms))
    }

    /// Inserts or replaces, keeping the expiry index and byte count right.
    pub(super) fn put(&mut self, key: Bytes, entry: Entry) {
        let added = footprint(&key, &entry);
        let expires_at = entry.expires_at_ms;
        // The map hands back the old value, `()`, so read the old entry first.
        if let Some(old) = self.map.get_key_value(key.as_ref()).map(|(item, ())| item.clone()) {
            self.forget(&key, old.entry());
        }
        self.map.insert(Item::new(key.clone(), entry), ());
        if let Some(at) = expires_at {
            self.expiry.insert((at, key));
        }
        self.bytes += added;
    }

    /// Removes `key`; returns the old entry.
    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (old, ()) = self.map.remove_with_key(key)?;
        self.forget(key, old.entry());
        Some(old.entry().clone())
    }

    fn forget(&mut self, key: &[u8], old: &Entry) {
        if let Some(at) = old.expires_at_ms {
            self.expiry.remove(&(at, Bytes::copy_from_slice(key)));
        }
        self.bytes = self.bytes.saturating_sub(footprint(key, old));
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
            if self.map.get_key_value(key.as_ref()).is_some_and(|(item, ())| item.entry().expires_at_ms == Some(at))
                && let Some((old, ())) = self.map.remove_with_key(key.as_ref())
            {
                self.bytes = self.bytes.saturating_sub(footprint(&key, old.entry()));
                removed += 1;
            }
        }
        (removed, false)
    }
}
