//! A persistent hash array mapped trie of [`Item`]s: one shard's map.
//!
//! Cloning a [`Trie`] is O(1) (it shares the root), and changing a clone
//! copies only the nodes on the changed key's path, so a published version
//! never changes under its readers and a snapshot is a clone.
//!
//! # Layout
//!
//! A node covers 32 slots, indexed at level `l` (0 = root) by hash bits
//! `59 - 5l .. 64 - 5l`, the top 60 bits over 12 levels; the shard was picked
//! with the low bits, so the two do not overlap where it matters. A slot is
//! empty, holds one or two items, or holds a child node. As in CHAMP
//! (Steindorfer and Vinju, OOPSLA 2015) a node keeps items and children in
//! two arrays ordered by slot: the items in the node's own allocation, the
//! children in a second one the node points to (none when it has no
//! children, as most nodes near the leaves have not). Each entry is then one
//! 8-byte pointer, where a single array mixing both kinds needs a 16-byte
//! tagged slot. Two bitmaps say what each slot holds:
//!
//! | `items` bit | `more` bit | the slot holds |
//! |---|---|---|
//! | 0 | 0 | nothing |
//! | 1 | 0 | one item |
//! | 1 | 1 | two items, next to each other in the items array |
//! | 0 | 1 | a child node |
//!
//! A slot takes a child only when a third key arrives, and a child left with
//! two items or fewer folds back into its parent's slot, so the shape depends
//! only on the keys, not on the order they came and went. Keys whose top 60
//! bits are equal end in a node at level 12, whose items are a list searched
//! linearly.
//!
//! Why two items a slot: with one, every pair of keys meeting in a slot cost
//! a node of its own (a 32-byte header and a children array entry) for two
//! 8-byte pointers. At 4096 shards a million keys leave about 250 a shard,
//! whose level-1 nodes hold 7 or 8 items in 32 slots, and a fifth of keys
//! met another in their slot: the map took 20.1 bytes a key, now 14.7 (and
//! 20.7 to 13.0 at 100k keys). The cost is a second key comparison for a
//! key that is second in its slot, a tenth of lookups at a million keys. A
//! third item a slot would need two bits of `more` per slot, a bigger
//! header, and saves under a byte a key more.
//!
//! # Why not `imbl`
//!
//! `imbl::HashMap` (the first version of this store) keeps fixed-capacity
//! nodes: 32 slots of 16 bytes in every inner node and 16 or 32 in every leaf,
//! however few are used. At a million keys over 4096 shards that was 45 bytes
//! of map per key; exact-size nodes of 16-byte slots took 28.5, the two
//! arrays of 8-byte pointers 20.1, and slots of up to two items 14.7. Copying
//! a path also moves only the entries that exist.

use std::iter::once;

use triomphe::ThinArc;

use super::Item;

const BITS: u32 = 5;
/// Levels of bitmap nodes; below them keys share their top 60 hash bits.
const LEVELS: u32 = 12;
/// Most items a slot holds before they move down into a child.
const SLOT_ITEMS: usize = 2;

/// A persistent map from key bytes to [`Item`]s, by a 64-bit key hash the
/// caller supplies (the same hash for the same key, always).
#[derive(Clone, Default)]
pub struct Trie {
    root: Option<Node>,
    len: usize,
}

impl std::fmt::Debug for Trie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trie").field("len", &self.len).finish_non_exhaustive()
    }
}

/// A node: its bitmaps and children in the header, its items in the slice.
type Node = ThinArc<Head, Item>;
/// A node's children, in the order of their bits.
type Kids = ThinArc<(), Node>;

#[derive(Clone)]
struct Head {
    /// Slots holding at least one item. Unused at level 12, where items are
    /// a list.
    items: u32,
    /// With the `items` bit, slots holding a second item; without it, slots
    /// holding a child (see the module doc's table).
    more: u32,
    /// `None` when no slot holds a child.
    kids: Option<Kids>,
}

impl Head {
    fn kids_map(&self) -> u32 {
        self.more & !self.items
    }

    fn pairs(&self) -> u32 {
        self.more & self.items
    }

    /// Where slot `bit`'s items start in the items array (or would start,
    /// for an empty slot), and how many there are.
    fn bucket(&self, bit: u32) -> (usize, usize) {
        let at = position(self.items, bit) + position(self.pairs(), bit);
        let count = usize::from(self.items & bit != 0) + usize::from(self.pairs() & bit != 0);
        (at, count)
    }
}

fn index(hash: u64, level: u32) -> u32 {
    debug_assert!(level < LEVELS, "bitmap nodes exist only on levels 0..12");
    // Truncation intended: 5 bits.
    #[allow(clippy::cast_possible_truncation)]
    let i = ((hash >> (64 - BITS * (level + 1)).min(63)) & 31) as u32;
    i
}

fn head(n: &Node) -> &Head {
    &n.header.header
}

fn kids(n: &Node) -> &[Node] {
    head(n).kids.as_ref().map_or(&[], |k| &k.slice)
}

/// Entries ahead of `bit` in an array ordered by `bitmap`.
fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

fn node(items: u32, more: u32, list: impl Iterator<Item = Item>, len: usize, kids: Option<Kids>) -> Node {
    ThinArc::from_header_and_iter(Head { items, more, kids }, Exact { iter: list, left: len })
}

fn kids_of(nodes: impl Iterator<Item = Node>, len: usize) -> Option<Kids> {
    (len > 0).then(|| ThinArc::from_header_and_iter((), Exact { iter: nodes, left: len }))
}

/// A node at `level` holding `entries` (items with their key hashes, all
/// keys different and sharing the hash bits above `level`), and the nodes
/// below it: three items moving down from a full slot, or a whole map
/// built at once ([`Trie::from_entries`]). Sorts `entries` in place and
/// clones each item once, into the node that keeps it.
fn node_of(entries: &mut [(Item, u64)], level: u32) -> Node {
    let len = entries.len();
    if level >= LEVELS {
        return node(0, 0, entries.iter().map(|(item, _)| item.clone()), len, None);
    }
    entries.sort_unstable_by_key(|&(_, hash)| index(hash, level));
    let (mut items, mut more, mut list, mut below) = (0, 0, Vec::with_capacity(len), Vec::new());
    let mut rest = entries;
    while let Some(&(_, first)) = rest.first() {
        let slot = index(first, level);
        let run = rest.iter().take_while(|&&(_, h)| index(h, level) == slot).count();
        let (group, tail) = rest.split_at_mut(run);
        let bit = 1 << slot;
        if run <= SLOT_ITEMS {
            items |= bit;
            if run == SLOT_ITEMS {
                more |= bit;
            }
            list.extend(group.iter().map(|(item, _)| item.clone()));
        } else {
            more |= bit;
            below.push(node_of(group, level + 1));
        }
        rest = tail;
    }
    let (n_items, n_kids) = (list.len(), below.len());
    node(items, more, list.into_iter(), n_items, kids_of(below.into_iter(), n_kids))
}

/// `list` with `extra` put in at `at`.
fn inserted<'a, T: Clone + 'a>(list: &'a [T], at: usize, extra: T) -> impl Iterator<Item = T> + 'a {
    list[..at].iter().cloned().chain(once(extra)).chain(list[at..].iter().cloned())
}

/// `list` without the `count` entries from `at`.
fn removed<T: Clone>(list: &[T], at: usize, count: usize) -> impl Iterator<Item = T> + '_ {
    list[..at].iter().chain(&list[at + count..]).cloned()
}

/// `n` with `item` added to slot `bit`, which holds fewer than two.
fn with_item_added(n: &Node, bit: u32, item: Item) -> Node {
    let h = head(n);
    let (at, count) = h.bucket(bit);
    let more = if count == 0 { h.more } else { h.more | bit };
    node(h.items | bit, more, inserted(&n.slice, at + count, item), n.slice.len() + 1, h.kids.clone())
}

/// `n` without the item at `at`, which is in slot `bit`.
fn with_item_removed(n: &Node, bit: u32, at: usize) -> Node {
    let h = head(n);
    let (items, more) = if h.pairs() & bit != 0 { (h.items, h.more & !bit) } else { (h.items & !bit, h.more) };
    node(items, more, removed(&n.slice, at, 1), n.slice.len() - 1, h.kids.clone())
}

/// `n` with the items of slot `bit` replaced by the child `kid` (which
/// holds them).
fn with_items_moved_down(n: &Node, bit: u32, kid: Node) -> Node {
    let h = head(n);
    let (at, count) = h.bucket(bit);
    let (list, kids_now) = (&n.slice, kids(n));
    let kids = kids_of(inserted(kids_now, position(h.kids_map(), bit), kid), kids_now.len() + 1);
    node(h.items & !bit, h.more | bit, removed(list, at, count), list.len() - count, kids)
}

/// `n` with the child at `bit` replaced by `folded`, its last one or two
/// items.
fn with_kid_folded(n: &Node, bit: u32, folded: &[Item]) -> Node {
    let h = head(n);
    let (list, kids_now) = (&n.slice, kids(n));
    let kids = kids_of(removed(kids_now, position(h.kids_map(), bit), 1), kids_now.len() - 1);
    let more = if folded.len() == SLOT_ITEMS { h.more } else { h.more & !bit };
    let (at, _) = h.bucket(bit);
    let items = list[..at].iter().chain(folded).chain(&list[at..]).cloned();
    node(h.items | bit, more, items, list.len() + folded.len(), kids)
}

/// `n` with its child at `at` (a position, not a bit) replaced by `kid`.
fn with_kid_replaced(n: &Node, at: usize, kid: Node) -> Node {
    let (h, kids_now) = (head(n), kids(n));
    let kids = kids_of(
        kids_now[..at].iter().cloned().chain(once(kid)).chain(kids_now[at + 1..].iter().cloned()),
        kids_now.len(),
    );
    node(h.items, h.more, n.slice.iter().cloned(), n.slice.len(), kids)
}

/// Runs `f` on the node's items, first copying the node if a published
/// version shares it (the copy-on-write of a path), in place otherwise.
fn items_mut<R>(n: &mut Node, f: impl FnOnce(&mut [Item]) -> R) -> R {
    unshare(n);
    n.with_arc_mut(|arc| match triomphe::Arc::get_mut(arc) {
        Some(inner) => f(inner.slice_mut()),
        None => unreachable!("a node just unshared is not shared"),
    })
}

/// Runs `f` on the node's children, copying the node and then its children
/// array where they are shared.
fn kids_mut<R>(n: &mut Node, f: impl FnOnce(&mut [Node]) -> R) -> R {
    unshare(n);
    n.with_arc_mut(|arc| match triomphe::Arc::get_mut(arc).and_then(|inner| inner.header_mut().kids.as_mut()) {
        Some(kids) => {
            unshare(kids);
            kids.with_arc_mut(|arc| match triomphe::Arc::get_mut(arc) {
                Some(inner) => f(inner.slice_mut()),
                None => unreachable!("children just unshared are not shared"),
            })
        }
        None => unreachable!("called only on a node with children, just unshared"),
    })
}

fn unshare<H: Clone, T: Clone>(a: &mut ThinArc<H, T>) {
    if ThinArc::strong_count(a) != 1 {
        *a = ThinArc::from_header_and_iter(a.header.header.clone(), a.slice.iter().cloned());
    }
}

/// Bytes ahead of a node's items: the reference count, the header (two
/// bitmaps and the children pointer) and the item count.
const NODE_HEADER: u64 = 32;
/// Bytes ahead of a children array: the reference count and the length.
const KIDS_HEADER: u64 = 16;
/// Bytes of one entry of either array: a pointer.
const ENTRY_BYTES: u64 = 8;

/// Where a map allocation lives, for [`Trie::relocated`]: whether to copy
/// it elsewhere, and where its copy went.
pub trait Relocate {
    /// Whether the allocation at `address`, of `bytes` as the allocator
    /// rounds them, is to be copied.
    fn moves(&mut self, address: usize, bytes: u64) -> bool;
    /// A copy was made at `address`.
    fn landed(&mut self, address: usize);
}

fn address<H, T>(a: &ThinArc<H, T>) -> usize {
    a.heap_ptr() as usize
}

/// What the allocator holds for a node, rounded up to its size class.
fn own_bytes(n: &Node) -> u64 {
    super::memory::alloc_size(NODE_HEADER + ENTRY_BYTES * n.slice.len() as u64)
}

/// What the allocator holds for a children array, rounded likewise.
fn kids_bytes(k: &Kids) -> u64 {
    super::memory::alloc_size(KIDS_HEADER + ENTRY_BYTES * k.slice.len() as u64)
}

fn each_allocation(n: &Node, f: &mut dyn FnMut(usize, u64)) {
    f(address(n), own_bytes(n));
    if let Some(k) = head(n).kids.as_ref() {
        f(address(k), kids_bytes(k));
        k.slice.iter().for_each(|c| each_allocation(c, f));
    }
}

/// `n` with the allocations `to` moves copied, and with them every node
/// above a copy (a parent points to its children); `None` if nothing under
/// `n` moves. Items are shared, not copied.
fn relocated(n: &Node, to: &mut dyn Relocate) -> Option<Node> {
    let h = head(n);
    let old_kids = kids(n);
    let new_kids: Vec<Option<Node>> = old_kids.iter().map(|k| relocated(k, to)).collect();
    let kid_moved = new_kids.iter().any(Option::is_some);
    let kids_move = h.kids.as_ref().is_some_and(|k| to.moves(address(k), kids_bytes(k)));
    if !(kid_moved || kids_move || to.moves(address(n), own_bytes(n))) {
        return None;
    }
    let kids = if kid_moved || kids_move {
        let merged = old_kids.iter().zip(new_kids).map(|(old, new)| new.unwrap_or_else(|| old.clone()));
        let k = kids_of(merged, old_kids.len());
        if let Some(k) = &k {
            to.landed(address(k));
        }
        k
    } else {
        h.kids.clone()
    };
    let copy = node(h.items, h.more, n.slice.iter().cloned(), n.slice.len(), kids);
    to.landed(address(&copy));
    Some(copy)
}

impl Trie {
    /// A map of `entries` (items with their key hashes, no two keys equal),
    /// each node allocated once at its final size.
    pub fn from_entries(mut entries: Vec<(Item, u64)>) -> Self {
        let len = entries.len();
        Trie { root: (len > 0).then(|| node_of(&mut entries, 0)), len }
    }

    /// Bytes the map itself holds (nodes and children arrays, not the
    /// items), as the allocator rounds them: the "map" line of the memory
    /// breakdown.
    pub fn map_bytes(&self) -> u64 {
        let mut total = 0;
        self.each_allocation(&mut |_, bytes| total += bytes);
        total
    }

    /// Calls `f` with the address and rounded size of every allocation the
    /// map holds (nodes and children arrays, not items).
    pub fn each_allocation(&self, f: &mut dyn FnMut(usize, u64)) {
        if let Some(root) = &self.root {
            each_allocation(root, f);
        }
    }

    /// The same map with the allocations `to` moves copied (and the nodes
    /// above them), or `None` if none moves. This map is left as it was.
    pub fn relocated(&self, to: &mut dyn Relocate) -> Option<Trie> {
        let root = relocated(self.root.as_ref()?, to)?;
        Some(Trie { root: Some(root), len: self.len })
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
        let mut n = self.root.as_ref()?;
        let mut level = 0;
        loop {
            if level >= LEVELS {
                return n.slice.iter().find(|i| i.key() == key);
            }
            let (bit, h) = (1 << index(hash, level), head(n));
            if h.items & bit != 0 {
                let (at, count) = h.bucket(bit);
                return n.slice[at..at + count].iter().find(|i| i.key() == key);
            }
            if h.more & bit == 0 {
                return None;
            }
            n = &kids(n)[position(h.kids_map(), bit)];
            level += 1;
        }
    }

    /// Stores `item` (whose key hashes to `hash`); returns the item it
    /// replaced. `rehash` gives the hash of a stored key, needed when two
    /// keys first share a slot.
    pub fn insert(&mut self, hash: u64, item: Item, rehash: &dyn Fn(&[u8]) -> u64) -> Option<Item> {
        let replaced = match &mut self.root {
            None => {
                self.root = Some(node(1 << index(hash, 0), 0, once(item), 1, None));
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
        let (rest, removed) = without(self.root.as_ref()?, hash, key, 0)?;
        self.len -= 1;
        self.root = (!rest.slice.is_empty() || head(&rest).kids.is_some()).then_some(rest);
        Some(removed)
    }

    /// Up to `max` items for eviction sampling, given to `f`: the slot
    /// picked by the random bits `r` at each node (uniformly among its items
    /// and children), then the items that follow it in its node, as Redis's
    /// `dictGetSomeKeys` takes neighbouring entries. Neighbours are no less
    /// random a sample (their place comes from their key's hash, not from
    /// how they are used) and cost no further walk from the root: the walk,
    /// one cache miss per level, was most of an eviction's time. Every item
    /// can be picked; it is not exactly uniform (an item in a sparser node
    /// is likelier), but hashed keys keep sibling nodes about equally full.
    pub fn sample<'a>(&'a self, mut r: u64, max: usize, f: impl FnMut(&'a Item)) {
        let Some(mut n) = self.root.as_ref() else { return };
        loop {
            let (items, children) = (n.slice.len(), kids(n));
            let total = items + children.len();
            if total == 0 || max == 0 {
                return;
            }
            // `r % total` < total, an entry's index.
            #[allow(clippy::cast_possible_truncation)]
            let pick = (r % total as u64) as usize;
            r = r.rotate_right(7) ^ (r / total as u64);
            if pick < items {
                n.slice.iter().cycle().skip(pick).take(max.min(items)).for_each(f);
                return;
            }
            n = &children[pick - items];
        }
    }

    /// Every item, in the same order as [`Trie::iter`], from an iterator that
    /// owns what it walks (nodes are reference-counted), so it can be kept
    /// between calls while this trie's shard moves on: a SCAN cursor.
    pub fn owned_iter(&self) -> OwnedIter {
        OwnedIter { stack: self.root.iter().map(|r| (r.clone(), 0)).collect() }
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { stack: self.root.iter().map(|r| (r.slice.iter(), kids(r).iter())).collect() }
    }
}

fn insert_into(n: &mut Node, hash: u64, item: Item, level: u32, rehash: &dyn Fn(&[u8]) -> u64) -> Option<Item> {
    if level >= LEVELS {
        if let Some(at) = n.slice.iter().position(|i| i.key() == item.key()) {
            return Some(items_mut(n, |items| std::mem::replace(&mut items[at], item)));
        }
        let len = n.slice.len() + 1;
        *n = node(0, 0, n.slice.iter().cloned().chain(once(item)), len, None);
        return None;
    }
    let (bit, h) = (1 << index(hash, level), head(n));
    if h.kids_map() & bit != 0 {
        let at = position(h.kids_map(), bit);
        return kids_mut(n, |kids| insert_into(&mut kids[at], hash, item, level + 1, rehash));
    }
    let (at, count) = h.bucket(bit);
    if let Some(i) = n.slice[at..at + count].iter().position(|i| i.key() == item.key()) {
        return Some(items_mut(n, |items| std::mem::replace(&mut items[at + i], item)));
    }
    if count < SLOT_ITEMS {
        *n = with_item_added(n, bit, item);
        return None;
    }
    // A third key in a full slot: the three move down into a child.
    let mut entries: Vec<(Item, u64)> =
        n.slice[at..at + count].iter().map(|i| (i.clone(), rehash(i.key()))).chain(once((item, hash))).collect();
    *n = with_items_moved_down(n, bit, node_of(&mut entries, level + 1));
    None
}

/// `n` without `key`, and the item removed; `None`, and nothing copied,
/// when `key` is not there. The path is rebuilt from the bottom up, so a
/// miss costs one read-only walk and a hit no second one.
fn without(n: &Node, hash: u64, key: &[u8], level: u32) -> Option<(Node, Item)> {
    if level >= LEVELS {
        let at = n.slice.iter().position(|i| i.key() == key)?;
        return Some((node(0, 0, removed(&n.slice, at, 1), n.slice.len() - 1, None), n.slice[at].clone()));
    }
    let (bit, h) = (1 << index(hash, level), head(n));
    if h.items & bit != 0 {
        let (at, count) = h.bucket(bit);
        let i = n.slice[at..at + count].iter().position(|i| i.key() == key)?;
        return Some((with_item_removed(n, bit, at + i), n.slice[at + i].clone()));
    }
    if h.more & bit == 0 {
        return None;
    }
    let at = position(h.kids_map(), bit);
    let (kid, found) = without(&kids(n)[at], hash, key, level + 1)?;
    // A child left with a slot's worth of items folds into this slot.
    let rest = if head(&kid).kids.is_none() && kid.slice.len() <= SLOT_ITEMS {
        with_kid_folded(n, bit, &kid.slice)
    } else {
        with_kid_replaced(n, at, kid)
    };
    Some((rest, found))
}

/// An iterator whose length is known, for building a node in place.
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

/// Iterator over a trie's items: each node's items, then its children's.
pub struct Iter<'a> {
    stack: Vec<(std::slice::Iter<'a, Item>, std::slice::Iter<'a, Node>)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Item;

    fn next(&mut self) -> Option<&'a Item> {
        loop {
            let (items, children) = self.stack.last_mut()?;
            if let Some(item) = items.next() {
                return Some(item);
            }
            match children.next() {
                Some(child) => self.stack.push((child.slice.iter(), kids(child).iter())),
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

/// See [`Trie::owned_iter`]. Holding it keeps the nodes it has yet to visit
/// alive, as a snapshot does.
#[derive(Clone, Default)]
pub struct OwnedIter {
    /// Nodes being walked, each with the next entry to visit: its items
    /// first, then its children.
    stack: Vec<(Node, usize)>,
}

impl Iterator for OwnedIter {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            let (n, at) = self.stack.last_mut()?;
            let items = n.slice.len();
            if let Some(item) = n.slice.get(*at) {
                *at += 1;
                return Some(item.clone());
            }
            let Some(child) = kids(n).get(*at - items).cloned() else {
                self.stack.pop();
                continue;
            };
            *at += 1;
            self.stack.push((child, 0));
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

    /// Relocating copies the allocation it is told to and the nodes above it
    /// (parents point to their children), nothing else, and every lookup
    /// finds what it found before.
    #[test]
    fn relocating_copies_what_moves_and_the_nodes_above_it() {
        struct Pick {
            target: usize,
            landed: Vec<usize>,
        }
        impl Relocate for Pick {
            fn moves(&mut self, address: usize, _: u64) -> bool {
                address == self.target
            }
            fn landed(&mut self, address: usize) {
                self.landed.push(address);
            }
        }
        let allocations = |t: &Trie| {
            let mut all = Vec::new();
            t.each_allocation(&mut |a, _| all.push(a));
            all
        };
        let mut t = Trie::default();
        for i in 0..500u32 {
            let k = i.to_be_bytes();
            t.insert(strong(&k), item(&k, 1), &strong);
        }
        let before = allocations(&t);
        assert!(t.relocated(&mut Pick { target: 0, landed: Vec::new() }).is_none(), "nothing moves");
        // Depth first, so the last allocation is a node below the root.
        let target = *before.last().unwrap();
        let mut pick = Pick { target, landed: Vec::new() };
        let moved = t.relocated(&mut pick).unwrap();
        let after = allocations(&moved);
        assert_eq!(before.len(), after.len());
        let changed: Vec<usize> = after.iter().zip(&before).filter(|(a, b)| a != b).map(|(a, _)| *a).collect();
        assert!(changed.len() >= 3, "the node, its parent's children array and its parent: {changed:?}");
        assert_eq!(changed.len(), pick.landed.len());
        assert!(pick.landed.iter().all(|a| changed.contains(a)));
        assert_ne!(after[0], before[0], "the root is above everything");
        assert_eq!(moved.map_bytes(), t.map_bytes());
        assert_eq!(moved.len(), 500);
        for i in 0..500u32 {
            let k = i.to_be_bytes();
            assert_eq!(moved.get(strong(&k), &k).map(Item::key), Some(&k[..]));
        }
    }

    /// A map built at once from its entries is the one inserting them
    /// gives, node for node, also where keys share all 60 hash bits.
    #[test]
    fn a_map_built_at_once_is_the_one_inserting_gives() {
        type Hash<'a> = &'a dyn Fn(&[u8]) -> u64;
        let hashes: [Hash<'_>; 2] = [&strong, &weak];
        for hash in hashes {
            for n in [0, 1, 2, 3, 5, 13, 40, 150, 400] {
                let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i}").into_bytes()).collect();
                let mut inserted = Trie::default();
                for k in &keys {
                    inserted.insert(hash(k), item(k, 1), hash);
                }
                let built = Trie::from_entries(keys.iter().map(|k| (item(k, 1), hash(k))).collect());
                assert_eq!(built.len(), n);
                assert_eq!(built.map_bytes(), inserted.map_bytes(), "{n} keys");
                for k in &keys {
                    assert!(built.get(hash(k), k).is_some());
                }
                let mut a: Vec<&[u8]> = built.iter().map(Item::key).collect();
                let mut b: Vec<&[u8]> = inserted.iter().map(Item::key).collect();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn the_counted_layout_is_the_real_one() {
        for size in [std::mem::size_of::<Item>(), std::mem::size_of::<Node>(), std::mem::size_of::<Option<Kids>>()] {
            assert_eq!(size as u64, ENTRY_BYTES);
        }
        // The reference count, then the header and the length.
        assert_eq!(8 + std::mem::size_of::<triomphe::HeaderWithLength<Head>>() as u64, NODE_HEADER);
        assert_eq!(8 + std::mem::size_of::<triomphe::HeaderWithLength<()>>() as u64, KIDS_HEADER);
        let mut t = Trie::default();
        assert_eq!(t.map_bytes(), 0);
        t.insert(strong(b"a"), item(b"a", 1), &strong);
        assert_eq!(t.map_bytes(), 48, "one node of one item: 32 + 8, in the 48-byte class");
        // Hashes equal at level 0, apart at level 1. Two keys share the
        // root's slot (32 + 2 x 8). A third moves the three down: a root
        // with one child (32, and 16 + 8 for its children) above a node of
        // three items (32 + 3 x 8, in the 64-byte class); a removal folds
        // the two left back.
        let three = |k: &[u8]| u64::from(k[0] - b'w') << 54;
        let mut t = Trie::default();
        t.insert(three(b"x"), item(b"x", 1), &three);
        t.insert(three(b"y"), item(b"y", 2), &three);
        assert_eq!(t.map_bytes(), 48);
        t.insert(three(b"z"), item(b"z", 3), &three);
        assert_eq!(t.map_bytes(), 32 + 32 + 64);
        assert!(t.remove(three(b"y"), b"y").is_some());
        assert_eq!(t.map_bytes(), 48);
        assert_eq!([&b"x"[..], b"z"].map(|k| t.get(three(k), k).map(|i| i.value()[0])), [Some(1), Some(3)]);
    }

    #[test]
    fn a_full_slot_moves_down_as_far_as_its_keys_share_bits_and_folds_back() {
        // Equal at levels 0 and 1, apart at level 2.
        let deep = |k: &[u8]| u64::from(k[0] - b'a' + 1) << 49;
        let mut t = Trie::default();
        for k in [&b"a"[..], b"b", b"c"] {
            assert!(t.insert(deep(k), item(k, k[0]), &deep).is_none());
        }
        // Root and level-1 node with one child each (32 + 32 apiece), then
        // a node of three items (32 + 24, in the 64-byte class).
        assert_eq!(t.map_bytes(), 2 * (32 + 32) + 64);
        assert_eq!(t.get(deep(b"b"), b"b").map(|i| i.value()[0]), Some(b'b'));
        assert_eq!(t.insert(deep(b"b"), item(b"b", 9), &deep).map(|i| i.value()[0]), Some(b'b'));
        assert!(t.get(deep(b"d"), b"d").is_none());
        assert!(t.remove(deep(b"a"), b"a").is_some());
        assert_eq!(t.map_bytes(), 48, "two left fold back up into the root's slot");
        assert!(t.get(deep(b"d"), b"d").is_none(), "a miss in a slot's pair");
        assert!(t.remove(deep(b"d"), b"d").is_none());
        let mut left: Vec<(u8, u8)> = t.iter().map(|i| (i.key()[0], i.value()[0])).collect();
        left.sort_unstable();
        assert_eq!(left, [(b'b', 9), (b'c', b'c')]);
    }

    /// What `memory::MAP_SHARE` says of the map: 12 to 18 bytes a key from
    /// 5 keys a shard to a few thousand, 24 at 2, and never more than a key
    /// is charged for it. Averaged over tries of random keys, as shards are.
    #[test]
    fn a_key_takes_the_map_bytes_it_is_charged_for() {
        let share = super::super::memory::MAP_SHARE as f64;
        for (per_trie, tries, low, high) in [
            (2u32, 2000u32, 20.0, 26.0),
            (5, 800, 12.0, 18.0),
            (30, 200, 12.0, 18.0),
            (250, 40, 12.0, 18.0),
            (3000, 4, 12.0, 18.0),
        ] {
            let mut bytes = 0;
            for t in 0..tries {
                let mut trie = Trie::default();
                for i in 0..per_trie {
                    let k = (u64::from(t) << 32 | u64::from(i)).to_be_bytes();
                    trie.insert(strong(&k), item(&k, 0), &strong);
                }
                bytes += trie.map_bytes();
            }
            let per_key = bytes as f64 / f64::from(per_trie * tries);
            assert!((low..=high).contains(&per_key), "{per_trie} keys a trie: {per_key:.1} bytes a key");
            if per_trie >= 5 {
                assert!(per_key <= share, "{per_trie} keys a trie: {per_key:.1} bytes a key, charged {share}");
            }
        }
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
            // Folding keeps the shape canonical: the same keys built afresh
            // take the same nodes, however many were removed on the way.
            let mut fresh = Trie::default();
            for (k, v) in &model {
                fresh.insert(hash(k), item(k, *v), hash);
            }
            prop_assert_eq!(t.map_bytes(), fresh.map_bytes());
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
