//! Moving map nodes off sparsely used pages once the keyspace has stopped
//! growing (or shrinking): the server's active defragmentation.
//!
//! Why: a map node is copied one entry larger each time a key joins it, so
//! while a store fills, its nodes pass through the allocator's small size
//! classes, and each class's population peaks and then falls as the nodes
//! move on to larger ones. jemalloc keeps a slab while any region of it is
//! in use, so the classes the growth has passed are left with part-used
//! pages: after a fill of 1M keys of 100-byte values, 4.4 MB, with the
//! 64-byte class 35% used (jemalloc's statistics; README "Memory per key,
//! broken down"). A restart builds every node once at its final size and
//! leaves none.
//!
//! Redis's active defrag asks jemalloc, through a private call, which slabs
//! are less used than average, and moves what is on them. Safe Rust cannot
//! ask; this pass estimates instead, from the addresses of the map's own
//! allocations (nodes and children arrays): the map's live bytes on each
//! 4 KiB page. A page with less than [`SPARSE`] of it in use is sparse,
//! and the nodes on it are copied, with the nodes above them (a parent
//! points to its children). A page a copy has landed on is being filled,
//! not emptied, and its nodes stay. jemalloc serves an allocation from the
//! holes of its oldest part-used slab first, so the copies fill holes and
//! the sparse pages empty. The copies are made on a thread of their own,
//! whose empty thread cache makes them come from the slabs, not from
//! regions the pass itself just freed; the replaced maps are kept until
//! every shard is done and then freed on another thread, whose cache is
//! flushed back to the slabs when it ends.
//!
//! The estimate can be wrong: other objects of the same size classes share
//! the pages, so a page can look sparser than it is. Then nodes are copied
//! for nothing; the map is the same map either way. Items are never copied:
//! they sit in full slabs of their own classes.
//!
//! A pass holds one shard's writer lock at a time, for the copy of that
//! shard's moved nodes. At 1M keys over 4096 shards the whole pass, the
//! walk included, took about 50 ms (the debug log's `took_ms`): 12 us a
//! shard on average, which bounds how long one shard's writers wait.

use std::collections::{HashMap, HashSet};

use super::trie::Relocate;
use super::{ShardMap, Store};

/// The page size the estimate counts in (jemalloc's on x86-64 and most
/// aarch64 Linux; with larger pages the estimate is only coarser).
const PAGE: usize = 4096;
/// Pages with less than this share of their bytes in live map allocations
/// are emptied (in percent).
const SPARSE: u64 = 60;
/// Allocations larger than this are not counted or moved: they are not in
/// the small classes' slabs the pass empties (a node is at most 544 bytes
/// except in the rare level-12 lists).
const SMALL: u64 = 1024;
/// Change in the key count, since the last look, that makes a new look
/// worth its walk: an eighth, and at least this many keys.
const MIN_CHANGE: usize = 50_000;

/// What one pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragPass {
    /// Pages holding map allocations.
    pub pages: usize,
    /// Of them, the sparse ones.
    pub sparse_pages: usize,
    /// Bytes the sparse pages leave unused (the estimate the pass acted on).
    pub sparse_bytes: u64,
    /// Allocations copied (nodes and children arrays, the moved ones and
    /// those above them); 0 when the sparse bytes were below the minimum.
    pub copied: usize,
}

/// The pages to empty, and those copies have landed on.
struct SparsePages {
    sparse: HashSet<usize>,
    landed: HashSet<usize>,
    copied: usize,
}

impl Relocate for SparsePages {
    fn moves(&mut self, address: usize, bytes: u64) -> bool {
        let page = address / PAGE;
        bytes <= SMALL && self.sparse.contains(&page) && !self.landed.contains(&page)
    }

    fn landed(&mut self, address: usize) {
        self.landed.insert(address / PAGE);
        self.copied += 1;
    }
}

impl Store {
    /// Copies the map nodes on sparse pages (see the module doc), if the
    /// sparse pages leave at least `min_waste` bytes unused. Blocks for the
    /// pass; call it off the async threads.
    pub fn defrag_maps(&self, min_waste: u64) -> DefragPass {
        std::thread::scope(|scope| {
            let copier = std::thread::Builder::new()
                .name("cryptomem-defrag".into())
                .spawn_scoped(scope, || self.relocate_sparse(min_waste));
            let Ok(copier) = copier else { return DefragPass::default() };
            let (pass, retired) = copier.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // Dropping `retired` here would leave up to a few hundred freed
            // nodes in this thread's cache, each holding a page the pass
            // emptied; a thread that ends flushes its cache.
            scope.spawn(move || drop(retired));
            pass
        })
    }

    fn relocate_sparse(&self, min_waste: u64) -> (DefragPass, Vec<(ShardMap, std::sync::Arc<ShardMap>)>) {
        let mut live: HashMap<usize, u64> = HashMap::new();
        for shard in self.shards.iter() {
            shard.with_map(|map| {
                map.each_allocation(&mut |address, bytes| {
                    if bytes <= SMALL {
                        *live.entry(address / PAGE).or_default() += bytes;
                    }
                });
            });
        }
        let page = PAGE as u64;
        let sparse: HashSet<usize> =
            live.iter().filter(|&(_, &bytes)| bytes * 100 < page * SPARSE).map(|(&p, _)| p).collect();
        let sparse_bytes = sparse.iter().map(|p| page.saturating_sub(live[p])).sum();
        let mut pass = DefragPass { pages: live.len(), sparse_pages: sparse.len(), sparse_bytes, copied: 0 };
        let mut retired = Vec::new();
        if sparse_bytes < min_waste {
            return (pass, retired);
        }
        let mut to = SparsePages { sparse, landed: HashSet::new(), copied: 0 };
        for shard in self.shards.iter() {
            retired.extend(shard.replace_map(|map| map.relocated(&mut to)));
        }
        pass.copied = to.copied;
        (pass, retired)
    }
}

/// When a pass is worth a look: once the key count has moved by an eighth
/// (and at least 50,000 keys) since the last look, and has held
/// within 1% since the previous check. Copying while a fill still runs
/// would copy nodes about to be replaced.
#[derive(Debug, Default)]
pub struct DefragTrigger {
    at_last_look: usize,
    at_last_check: usize,
}

impl DefragTrigger {
    /// Starts from the key count the server started with (a recovered map
    /// is built at once and needs no pass).
    pub fn new(keys: usize) -> Self {
        Self { at_last_look: keys, at_last_check: keys }
    }

    /// Called periodically with the key count; true when a pass is due.
    pub fn due(&mut self, keys: usize) -> bool {
        let settled = keys.abs_diff(self.at_last_check) <= keys / 100;
        self.at_last_check = keys;
        let moved = keys.abs_diff(self.at_last_look) >= (self.at_last_look / 8).max(MIN_CHANGE);
        if settled && moved {
            self.at_last_look = keys;
        }
        settled && moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SetCondition;

    const NOW: u64 = 1_000;

    fn set(store: &Store, key: &[u8], value: &[u8]) {
        assert!(store.set(key, value, None, SetCondition::Always, NOW).unwrap().outcome);
    }

    fn store_with(keys: usize) -> Store {
        let store = Store::new(64);
        for i in 0..keys {
            set(&store, format!("key:{i:08}").as_bytes(), &[7; 100]);
        }
        store
    }

    fn addresses(store: &Store) -> HashSet<usize> {
        let mut all = HashSet::new();
        for shard in store.shards.iter() {
            shard.with_map(|m| {
                m.each_allocation(&mut |a, _| {
                    all.insert(a);
                });
            });
        }
        all
    }

    #[test]
    fn a_pass_below_the_minimum_copies_nothing() {
        let store = store_with(2000);
        let before = addresses(&store);
        let pass = store.defrag_maps(u64::MAX);
        assert!(pass.pages > 0 && pass.sparse_pages <= pass.pages, "{pass:?}");
        assert_eq!(pass.copied, 0);
        assert_eq!(addresses(&store), before, "no node moved");
    }

    /// With every byte counted as waste, every sparse page's nodes move; the
    /// map keeps every key and value, and a reader holding the old version
    /// still reads it whole.
    #[test]
    fn a_pass_copies_the_nodes_of_sparse_pages_and_keeps_the_map() {
        let store = store_with(3000);
        let held = store.shard_maps();
        let before = addresses(&store);
        let map_bytes: u64 = held.iter().map(|m| m.map_bytes()).sum();
        let pass = store.defrag_maps(0);
        assert!(pass.sparse_pages > 0, "3000 keys over 64 shards leave sparse pages: {pass:?}");
        assert!(pass.copied > 0, "{pass:?}");
        let after = addresses(&store);
        assert_eq!(before.len(), after.len());
        // `held` keeps every old allocation alive, so each copy replaced
        // one at a new address.
        assert_eq!(before.difference(&after).count(), pass.copied);
        assert_eq!(store.shard_maps().iter().map(|m| m.map_bytes()).sum::<u64>(), map_bytes, "same shape");
        for i in 0..3000 {
            let key = format!("key:{i:08}");
            assert_eq!(store.get(key.as_bytes(), NOW).map(|i| i.value().to_vec()), Some(vec![7; 100]), "{key}");
        }
        assert_eq!(held.iter().map(|m| m.len()).sum::<usize>(), 3000);
        assert!(held.iter().flat_map(|m| m.iter()).all(|i| i.value() == [7; 100]));
        set(&store, b"key:after", b"v");
        assert_eq!(store.len(), 3001, "the shards take writes after the pass");
    }

    #[test]
    fn a_look_is_due_once_the_key_count_has_moved_and_settled() {
        let mut t = DefragTrigger::new(0);
        assert!(!t.due(10_000), "too few keys");
        assert!(!t.due(400_000), "still growing");
        assert!(!t.due(800_000), "still growing");
        assert!(t.due(801_000), "held within 1%");
        assert!(!t.due(801_000), "nothing moved since the look");
        assert!(!t.due(850_000), "growing again");
        assert!(!t.due(850_000), "settled, but an eighth is 100,125 keys");
        assert!(!t.due(920_000), "growing again");
        assert!(t.due(920_500), "moved and settled");
        assert!(!t.due(900_000));
        assert!(!t.due(800_000), "a shrink still moving");
        assert!(t.due(800_000), "a shrink settled counts too");
        let mut recovered = DefragTrigger::new(1_000_000);
        assert!(!recovered.due(1_000_000), "a recovered map needs no pass");
    }
}
