//! A persistent hash array mapped trie of [`Item`]s: one shard's map.
//!
//! Cloning a [`Trie`] is O(1) (it shares the root), and changing a clone
//! copies only the nodes on the changed key's path, so a published version
//! never changes under its readers and a snapshot is a clone.
//!
//! # Layout
//!
//! A branch holds a 32-bit bitmap and exactly as many slots as bits set
//! (each slot 16 bytes: an item, a child branch, or a collision list). Level
//! `l` (0 = root) indexes its 32 slots with hash bits `59 - 5l .. 64 - 5l`,
//! the top 60 bits over 12 levels; the shard was picked with the low bits, so
//! the two do not overlap where it matters. Keys whose top 60 bits are equal
//! end in a collision list, searched linearly. A branch left with a single
//! item is folded into its parent, so the trie stays as shallow as its keys
//! require.
//!
//! # Why not `imbl`
//!
//! `imbl::HashMap` (the first version of this store) keeps fixed-capacity
//! nodes: 32 slots of 16 bytes in every inner node and 16 or 32 in every leaf,
//! however few are used. At a million keys over 4096 shards that was 45 bytes
//! of map per key; exact-size branches need about 23. Copying a path also
//! moves only the slots that exist.

use std::sync::Arc;

use triomphe::ThinArc;

use super::Item;

const BITS: u32 = 5;
/// Levels of branches; below them keys share their top 60 hash bits.
const LEVELS: u32 = 12;

/// A persistent map from key bytes to [`Item`]s, by a 64-bit key hash the
/// caller supplies (the same hash for the same key, always).
#[derive(Clone, Default)]
pub struct Trie {
    root: Option<Branch>,
    len: usize,
}

impl std::fmt::Debug for Trie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trie").field("len", &self.len).finish_non_exhaustive()
    }
}

/// A branch: its bitmap and one slot per bit set, in one allocation.
type Branch = ThinArc<u32, Slot>;

#[derive(Clone)]
enum Slot {
    Item(Item),
    Branch(Branch),
    /// At least two items whose hashes agree on the top 60 bits.
    Collision(Arc<Vec<Item>>),
    /// What a slot holds for the instant its contents are moved into a new
    /// branch; never seen in a finished trie.
    Vacant,
}

fn index(hash: u64, level: u32) -> u32 {
    debug_assert!(level < LEVELS, "branches exist only on levels 0..12");
    // Truncation intended: 5 bits.
    #[allow(clippy::cast_possible_truncation)]
    let i = ((hash >> (64 - BITS * (level + 1)).min(63)) & 31) as u32;
    i
}

fn bitmap(b: &Branch) -> u32 {
    b.header.header
}

fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

fn branch(bitmap: u32, slots: impl Iterator<Item = Slot>, len: usize) -> Branch {
    ThinArc::from_header_and_iter(bitmap, Exact { iter: slots, left: len })
}

/// `b` with `slot` added at `bit`. A branch nobody else holds gives up its
/// slots (no reference count changes, as when recovery loads keys); a shared
/// one is copied.
fn with_slot_added(b: &mut Branch, bit: u32, slot: Slot) -> Branch {
    let (map, len, at) = (bitmap(b) | bit, b.slice.len() + 1, position(bitmap(b), bit));
    if ThinArc::strong_count(b) == 1 {
        return slots_mut(b, |slots| {
            let (left, right) = slots.split_at_mut(at);
            let moved = left.iter_mut().map(take).chain(std::iter::once(slot)).chain(right.iter_mut().map(take));
            branch(map, moved, len)
        });
    }
    let old = &b.slice;
    branch(map, old[..at].iter().cloned().chain(std::iter::once(slot)).chain(old[at..].iter().cloned()), len)
}

/// `b` without the slot at `bit`; moves the others out of a branch nobody else holds.
fn with_slot_removed(b: &mut Branch, bit: u32) -> Branch {
    let (map, len, at) = (bitmap(b) & !bit, b.slice.len() - 1, position(bitmap(b), bit));
    if ThinArc::strong_count(b) == 1 {
        return slots_mut(b, |slots| {
            let (left, right) = slots.split_at_mut(at);
            branch(map, left.iter_mut().chain(right.iter_mut().skip(1)).map(take), len)
        });
    }
    let old = &b.slice;
    branch(map, old[..at].iter().chain(&old[at + 1..]).cloned(), len)
}

fn take(slot: &mut Slot) -> Slot {
    std::mem::replace(slot, Slot::Vacant)
}

/// Runs `f` on the branch's slots, first copying the branch if a published
/// version shares it (the copy-on-write of a path), in place otherwise.
fn slots_mut<R>(b: &mut Branch, f: impl FnOnce(&mut [Slot]) -> R) -> R {
    if ThinArc::strong_count(b) != 1 {
        *b = branch(bitmap(b), b.slice.iter().cloned(), b.slice.len());
    }
    b.with_arc_mut(|arc| match triomphe::Arc::get_mut(arc) {
        Some(inner) => f(inner.slice_mut()),
        // The copy above left `b` the only owner.
        None => unreachable!("a branch just copied is not shared"),
    })
}

/// A slot holding two items with different keys, at `level`.
fn pair(a: Item, a_hash: u64, b: Item, b_hash: u64, level: u32) -> Slot {
    if level >= LEVELS {
        return Slot::Collision(Arc::new(vec![a, b]));
    }
    let (ia, ib) = (index(a_hash, level), index(b_hash, level));
    let node = if ia == ib {
        branch(1 << ia, std::iter::once(pair(a, a_hash, b, b_hash, level + 1)), 1)
    } else {
        let (first, second) = if ia < ib { (a, b) } else { (b, a) };
        branch((1 << ia) | (1 << ib), [Slot::Item(first), Slot::Item(second)].into_iter(), 2)
    };
    Slot::Branch(node)
}

/// Bytes ahead of a branch's slots: the reference count, the bitmap and the
/// slot count.
const BRANCH_HEADER: u64 = 24;
/// Bytes of one slot.
const SLOT_BYTES: u64 = 16;
/// A collision list's `Arc<Vec<_>>` block: two counts and the Vec.
const COLLISION_HEADER: u64 = 40;

/// What the allocator holds for `b` and the branches and lists below it,
/// each rounded up to its size class.
fn branch_bytes(b: &Branch) -> u64 {
    let own = super::memory::alloc_size(BRANCH_HEADER + SLOT_BYTES * b.slice.len() as u64);
    own + b
        .slice
        .iter()
        .map(|slot| match slot {
            Slot::Branch(child) => branch_bytes(child),
            Slot::Collision(items) => {
                super::memory::alloc_size(COLLISION_HEADER) + super::memory::alloc_size(8 * items.capacity() as u64)
            }
            Slot::Item(_) | Slot::Vacant => 0,
        })
        .sum::<u64>()
}

impl Trie {
    /// Bytes the map itself holds (branches and collision lists, not the
    /// items), as the allocator rounds them: the "map" line of the memory
    /// breakdown.
    pub fn map_bytes(&self) -> u64 {
        self.root.as_ref().map_or(0, branch_bytes)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item stored under `key`, whose hash is `hash`.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&Item> {
        let mut b = self.root.as_ref()?;
        let mut level = 0;
        loop {
            let bit = 1 << index(hash, level);
            if bitmap(b) & bit == 0 {
                return None;
            }
            match &b.slice[position(bitmap(b), bit)] {
                Slot::Item(item) => return (item.key() == key).then_some(item),
                Slot::Branch(child) => b = child,
                Slot::Collision(items) => return items.iter().find(|i| i.key() == key),
                Slot::Vacant => return None,
            }
            level += 1;
        }
    }

    /// Stores `item` (whose key hashes to `hash`); returns the item it
    /// replaced. `rehash` gives the hash of a stored key, needed when two
    /// keys first share a slot.
    pub fn insert(&mut self, hash: u64, item: Item, rehash: &dyn Fn(&[u8]) -> u64) -> Option<Item> {
        let replaced = match &mut self.root {
            None => {
                self.root = Some(branch(1 << index(hash, 0), std::iter::once(Slot::Item(item)), 1));
                None
            }
            Some(root) => insert_into(root, hash, item, 0, rehash),
        };
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes `key` (whose hash is `hash`); returns the removed item.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Item> {
        let root = self.root.as_mut()?;
        let removed = remove_from(root, hash, key, 0)?;
        self.len -= 1;
        if root.slice.is_empty() {
            self.root = None;
        }
        Some(removed)
    }

    /// Up to `max` items for eviction sampling, given to `f`: the slot
    /// picked by the random bits `r` at each branch (uniformly by the next
    /// bits), then the items that follow it in its branch, as Redis's
    /// `dictGetSomeKeys` takes neighbouring entries. Neighbours are no less
    /// random a sample (their place comes from their key's hash, not from
    /// how they are used) and cost no further walk from the root: the walk,
    /// one cache miss per level, was most of an eviction's time. Every item
    /// can be picked; it is not exactly uniform (an item in a sparser branch
    /// is likelier), but hashed keys keep sibling branches about equally full.
    pub fn sample<'a>(&'a self, mut r: u64, max: usize, mut f: impl FnMut(&'a Item)) {
        let Some(mut b) = self.root.as_ref() else { return };
        loop {
            let n = b.slice.len();
            if n == 0 || max == 0 {
                return;
            }
            // `r % n` < n, a slot index.
            #[allow(clippy::cast_possible_truncation)]
            let pick = (r % n as u64) as usize;
            r = r.rotate_right(7) ^ (r / n as u64);
            match &b.slice[pick] {
                Slot::Branch(child) => b = child,
                Slot::Collision(items) => {
                    #[allow(clippy::cast_possible_truncation)]
                    let first = (r % items.len().max(1) as u64) as usize;
                    items.iter().cycle().skip(first).take(max.min(items.len())).for_each(&mut f);
                    return;
                }
                _ => {
                    let run = b.slice.iter().cycle().skip(pick).take(n);
                    run.filter_map(|s| if let Slot::Item(i) = s { Some(i) } else { None }).take(max).for_each(f);
                    return;
                }
            }
        }
    }

    /// Every item, in the same order as [`Trie::iter`], from an iterator that
    /// owns what it walks (branches are reference-counted), so it can be kept
    /// between calls while this trie's shard moves on: a SCAN cursor.
    pub fn owned_iter(&self) -> OwnedIter {
        OwnedIter { stack: self.root.iter().map(|r| (r.clone(), 0)).collect(), collision: None }
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { stack: self.root.iter().map(|r| r.slice.iter()).collect(), collision: [].iter() }
    }
}

fn insert_into(b: &mut Branch, hash: u64, item: Item, level: u32, rehash: &dyn Fn(&[u8]) -> u64) -> Option<Item> {
    let bit = 1 << index(hash, level);
    if bitmap(b) & bit == 0 {
        *b = with_slot_added(b, bit, Slot::Item(item));
        return None;
    }
    let at = position(bitmap(b), bit);
    slots_mut(b, |slots| {
        let slot = &mut slots[at];
        match slot {
            Slot::Item(existing) if existing.key() == item.key() => Some(std::mem::replace(existing, item)),
            Slot::Item(existing) => {
                let existing_hash = rehash(existing.key());
                *slot = pair(existing.clone(), existing_hash, item, hash, level + 1);
                None
            }
            Slot::Branch(child) => insert_into(child, hash, item, level + 1, rehash),
            Slot::Collision(items) => {
                let items = Arc::make_mut(items);
                match items.iter_mut().find(|i| i.key() == item.key()) {
                    Some(existing) => Some(std::mem::replace(existing, item)),
                    None => {
                        items.push(item);
                        None
                    }
                }
            }
            Slot::Vacant => {
                *slot = Slot::Item(item);
                None
            }
        }
    })
}

fn remove_from(b: &mut Branch, hash: u64, key: &[u8], level: u32) -> Option<Item> {
    let bit = 1 << index(hash, level);
    if bitmap(b) & bit == 0 {
        return None;
    }
    let at = position(bitmap(b), bit);
    match &b.slice[at] {
        Slot::Item(item) if item.key() == key => {
            let removed = item.clone();
            *b = with_slot_removed(b, bit);
            Some(removed)
        }
        Slot::Item(_) | Slot::Vacant => None,
        Slot::Branch(_) => slots_mut(b, |slots| {
            let Slot::Branch(child) = &mut slots[at] else { return None };
            let removed = remove_from(child, hash, key, level + 1)?;
            // A child left with one item folds into this slot.
            if let [Slot::Item(only)] = &child.slice[..] {
                slots[at] = Slot::Item(only.clone());
            }
            Some(removed)
        }),
        Slot::Collision(items) => {
            let found = items.iter().position(|i| i.key() == key)?;
            slots_mut(b, |slots| {
                let Slot::Collision(items) = &mut slots[at] else { return None };
                let items = Arc::make_mut(items);
                let removed = items.swap_remove(found);
                if let [only] = items.as_slice() {
                    slots[at] = Slot::Item(only.clone());
                }
                Some(removed)
            })
        }
    }
}

/// An iterator whose length is known, for building a branch in place.
struct Exact<I> {
    iter: I,
    left: usize,
}

impl<I: Iterator> Iterator for Exact<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let next = self.iter.next()?;
        self.left = self.left.saturating_sub(1);
        Some(next)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Exact<I> {}

/// Iterator over a trie's items.
pub struct Iter<'a> {
    stack: Vec<std::slice::Iter<'a, Slot>>,
    collision: std::slice::Iter<'a, Item>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Item;

    fn next(&mut self) -> Option<&'a Item> {
        loop {
            if let Some(item) = self.collision.next() {
                return Some(item);
            }
            let slots = self.stack.last_mut()?;
            match slots.next() {
                None => {
                    self.stack.pop();
                }
                Some(Slot::Item(item)) => return Some(item),
                Some(Slot::Branch(child)) => self.stack.push(child.slice.iter()),
                Some(Slot::Collision(items)) => self.collision = items.iter(),
                Some(Slot::Vacant) => {}
            }
        }
    }
}

/// See [`Trie::owned_iter`]. Holding it keeps the nodes it has yet to visit
/// alive, as a snapshot does.
#[derive(Clone, Default)]
pub struct OwnedIter {
    /// Branches being walked, each with the next slot to visit.
    stack: Vec<(Branch, usize)>,
    collision: Option<(Arc<Vec<Item>>, usize)>,
}

impl Iterator for OwnedIter {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some((items, at)) = &mut self.collision {
                if let Some(item) = items.get(*at) {
                    *at += 1;
                    return Some(item.clone());
                }
                self.collision = None;
            }
            let (branch, at) = self.stack.last_mut()?;
            let Some(slot) = branch.slice.get(*at).cloned() else {
                self.stack.pop();
                continue;
            };
            *at += 1;
            match slot {
                Slot::Item(item) => return Some(item),
                Slot::Branch(child) => self.stack.push((child, 0)),
                Slot::Collision(items) => self.collision = Some((items, 0)),
                Slot::Vacant => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A deliberately weak hash so that tests reach deep levels and collisions:
    /// only the first byte of the key spreads, the rest shares its top bits.
    fn weak(key: &[u8]) -> u64 {
        let first = u64::from(key.first().copied().unwrap_or(0));
        (first % 4) << 62 | u64::from(key.len() as u8 % 3)
    }

    fn strong(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key)
    }

    fn item(k: &[u8], v: u8) -> Item {
        Item::new(k, &[v], None)
    }

    #[test]
    fn the_counted_layout_is_the_real_one() {
        assert_eq!(std::mem::size_of::<Slot>() as u64, SLOT_BYTES);
        // The reference count, then the bitmap and the slot count.
        let header = 8 + std::mem::size_of::<triomphe::HeaderWithLength<u32>>() as u64;
        assert_eq!(header, BRANCH_HEADER);
        assert_eq!(8 + std::mem::size_of::<Vec<Item>>() as u64 + 8, COLLISION_HEADER);
        let mut t = Trie::default();
        assert_eq!(t.map_bytes(), 0);
        t.insert(strong(b"a"), item(b"a", 1), &strong);
        assert_eq!(t.map_bytes(), 48, "one branch of one slot: 24 + 16, in the 48-byte class");
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t = Trie::default();
        assert!(t.insert(strong(b"a"), item(b"a", 1), &strong).is_none());
        assert!(t.insert(strong(b"b"), item(b"b", 2), &strong).is_none());
        assert_eq!(t.get(strong(b"a"), b"a").map(Item::value), Some(&[1u8][..]));
        assert_eq!(t.insert(strong(b"a"), item(b"a", 3), &strong).map(|i| i.value().to_vec()), Some(vec![1]));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(strong(b"a"), b"a").map(|i| i.value().to_vec()), Some(vec![3]));
        assert!(t.remove(strong(b"a"), b"a").is_none());
        assert!(t.get(strong(b"a"), b"a").is_none());
        assert_eq!(t.remove(strong(b"b"), b"b").map(|i| i.key().to_vec()), Some(b"b".to_vec()));
        assert!(t.is_empty() && t.root.is_none());
    }

    #[test]
    fn sampling_reaches_every_item() {
        let mut t = Trie::default();
        for k in 0..200u8 {
            t.insert(strong(&[k]), item(&[k], k), &strong);
        }
        let mut seen = std::collections::HashSet::new();
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            r = r.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let mut one = 0;
            t.sample(r >> 11, 1, |i| {
                seen.insert(i.key().to_vec());
                one += 1;
            });
            assert_eq!(one, 1);
        }
        assert_eq!(seen.len(), 200);
        let mut run = std::collections::HashSet::new();
        t.sample(12_345, 3, |i| assert!(run.insert(i.key().to_vec()), "distinct"));
        assert_eq!(run.len(), 3, "a run of neighbours");
        let mut none = 0;
        Trie::default().sample(1, 3, |_| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn equal_hashes_share_a_collision_list() {
        let same = |_: &[u8]| 42u64;
        let mut t = Trie::default();
        for k in [&b"x"[..], b"y", b"z"] {
            t.insert(42, item(k, k[0]), &same);
        }
        assert_eq!(t.len(), 3);
        for k in [&b"x"[..], b"y", b"z"] {
            assert_eq!(t.get(42, k).map(|i| i.value()[0]), Some(k[0]));
        }
        assert!(t.remove(42, b"y").is_some());
        assert!(t.remove(42, b"x").is_some());
        assert_eq!(t.get(42, b"z").map(|i| i.value()[0]), Some(b'z'), "the last one folds back into an item");
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn a_clone_does_not_see_later_changes() {
        let mut t = Trie::default();
        for i in 0u32..1000 {
            let k = i.to_be_bytes();
            t.insert(strong(&k), item(&k, 1), &strong);
        }
        let snapshot = t.clone();
        for i in 0u32..1000 {
            let k = i.to_be_bytes();
            if i % 2 == 0 {
                t.remove(strong(&k), &k);
            } else {
                t.insert(strong(&k), item(&k, 2), &strong);
            }
        }
        assert_eq!(snapshot.len(), 1000);
        assert!(snapshot.iter().all(|i| i.value() == [1]));
        assert_eq!(t.len(), 500);
        assert!(t.iter().all(|i| i.value() == [2]));
    }

    proptest! {
        /// Any sequence of inserts and removes, with a strong or a colliding
        /// hash, behaves as a map; iteration yields each item once; earlier
        /// clones keep their contents.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), proptest::collection::vec(0u8..6, 0..4), any::<u8>()), 1..300), weak_hash in any::<bool>()) {
            let hash: &dyn Fn(&[u8]) -> u64 = if weak_hash { &weak } else { &strong };
            let mut t = Trie::default();
            let mut model: HashMap<Vec<u8>, u8> = HashMap::new();
            let mut clones = Vec::new();
            for (n, (insert, key, v)) in ops.into_iter().enumerate() {
                if insert {
                    let old = t.insert(hash(&key), item(&key, v), hash).map(|i| i.value()[0]);
                    prop_assert_eq!(old, model.insert(key.clone(), v));
                } else {
                    let old = t.remove(hash(&key), &key).map(|i| i.value()[0]);
                    prop_assert_eq!(old, model.remove(&key));
                }
                prop_assert_eq!(t.len(), model.len());
                if n % 25 == 0 {
                    clones.push((t.clone(), model.clone()));
                }
            }
            for (k, v) in &model {
                prop_assert_eq!(t.get(hash(k), k).map(|i| i.value()[0]), Some(*v));
            }
            let in_order: Vec<Vec<u8>> = t.iter().map(|i| i.key().to_vec()).collect();
            let owned: Vec<Vec<u8>> = t.owned_iter().map(|i| i.key().to_vec()).collect();
            prop_assert_eq!(&owned, &in_order, "the owned iterator walks the same order");
            let mut seen = in_order;
            seen.sort();
            let mut expected: Vec<Vec<u8>> = model.keys().cloned().collect();
            expected.sort();
            prop_assert_eq!(seen, expected);
            for (c, m) in clones {
                prop_assert_eq!(c.len(), m.len());
                for (k, v) in &m {
                    prop_assert_eq!(c.get(hash(k), k).map(|i| i.value()[0]), Some(*v));
                }
            }
        }
    }
}
