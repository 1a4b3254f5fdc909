//! One stored key: the key, its value and its expiry in a single allocation.
//!
//! A map slot holds an [`Item`], a thin (8-byte) pointer to a reference
//! counted block `[count | expiry | version | key length | access | byte
//! length | key | value]`: 40 bytes ahead of the key (the access word took
//! the padding an `expires` flag left; "never" is `u64::MAX`).
//!
//! The version is the sequence number of the key's last logged change, the
//! compare-and-set check (`GETV`, `SETV`, `DELETEV`). It is written once, by
//! the writer that stores the item, before the item is published.
//!
//! The access word is the only part that changes once published: readers update it with one
//! relaxed atomic store, so tracking recency and frequency for eviction never
//! turns a read into a shard write. Its top 24 bits are the last access in
//! [`ACCESS_TICK_MS`] ticks (wrapping after about 49 days, compared modulo
//! 2^24 as Redis compares its 24-bit LRU clock), its low 8 bits a
//! logarithmic access counter (Redis's LFU counter). Under
//! `allkeys-tinylfu` the same 32 bits hold what that policy ranks by
//! instead (see `TinyLfu::access_word` in `evict.rs`).
//! One allocation per key instead of three (entry, key, value) saves about
//! 100 bytes per key and two `malloc`/`free` pairs per write. The thin pointer
//! keeps the persistent map's entries at 8 bytes, which matters because every
//! write copies the map nodes on its path: copying an entry is one refcount
//! increment and an 8-byte move.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use triomphe::{Arc, HeaderWithLength, ThinArc};

/// Milliseconds per tick of the access clock.
pub const ACCESS_TICK_MS: u64 = 256;
/// Ticks wrap at 2^24.
const TICK_MASK: u32 = (1 << 24) - 1;
/// Items up to this many bytes of key and value are filled byte by byte,
/// which beats an extra allocation; larger ones are copied as slices.
const COPY_BY_ITER_UP_TO: usize = 512;
/// `expires_at_ms` of an item that never expires.
const NEVER: u64 = u64::MAX;

/// The access clock's tick at `now_ms`.
pub fn access_tick(now_ms: u64) -> u32 {
    // Truncation is the point: the tick wraps like Redis's LRU clock.
    #[allow(clippy::cast_possible_truncation)]
    let tick = (now_ms / ACCESS_TICK_MS) as u32;
    tick & TICK_MASK
}

/// Ticks from `then` to `now`, modulo the wrap.
pub fn ticks_since(then: u32, now: u32) -> u32 {
    now.wrapping_sub(then) & TICK_MASK
}

/// Reads every item's access word, all before any result is used: each
/// first touch of an item is a cache miss, and independent loads let the
/// misses overlap where scoring the items one by one makes each wait for the
/// last. Eviction calls it on its draws before it scores them.
pub fn touch_all<'a>(items: impl Iterator<Item = &'a Item>) {
    std::hint::black_box(items.fold(0, |a, i| a ^ i.access()));
}

/// The fixed part of an item, ahead of its key and value bytes.
#[derive(Debug)]
struct Header {
    /// Absolute expiry in Unix ms; [`NEVER`] for none.
    expires_at_ms: u64,
    /// Sequence number of the key's last change (see the module doc).
    version: AtomicU64,
    /// A `u32`, so no key is ever cut short.
    key_len: u32,
    /// Last access tick (high 24 bits) and access counter (low 8).
    access: AtomicU32,
}

/// A stored key with its value and expiry. Cloning shares it (one refcount
/// increment). Hash, equality and order are the key's alone, and hash exactly
/// as `[u8]` does, so a map of items can be searched with a plain key.
#[derive(Clone)]
pub struct Item(ThinArc<Header, u8>);

impl Item {
    /// Copies `key` and `value` into a new item. (Keys are bounded far below
    /// 4 GiB on every input path: the protocol's `u16` field, and the frame
    /// size limit for keys read back from disk.)
    pub fn new(key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> Self {
        Self::with_access(key, value, expires_at_ms, 0)
    }

    /// [`Item::new`] with an initial access word (see [`Item::access`]).
    pub fn with_access(key: &[u8], value: &[u8], expires_at_ms: Option<u64>, access: u32) -> Self {
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let key = &key[..key_len as usize];
        let header = Header {
            expires_at_ms: expires_at_ms.map_or(NEVER, |at| at.min(NEVER - 1)),
            version: AtomicU64::new(0),
            key_len,
            access: AtomicU32::new(access),
        };
        let len = key.len() + value.len();
        if len <= COPY_BY_ITER_UP_TO {
            return Self(ThinArc::from_header_and_iter(header, Concat { first: key, second: value, at: 0 }));
        }
        // triomphe fills from an iterator one byte at a time (about 1 ns a
        // byte: 60 us for a 64 KiB value, most of a large SET's store time);
        // from a Vec it is one memcpy. Joining key and value first costs a
        // second memcpy and an allocation, still 6x faster at 64 KiB.
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        Self(Arc::into_thin(Arc::from_header_and_vec(HeaderWithLength::new(header, len), data)))
    }

    /// The same key and value with another expiry (and the same access record).
    #[must_use]
    pub fn with_expiry(&self, expires_at_ms: Option<u64>) -> Self {
        Self::with_access(self.key(), self.value(), expires_at_ms, self.access())
    }

    /// The sequence number of the key's last change.
    pub fn version(&self) -> u64 {
        self.0.header.header.version.load(Ordering::Relaxed)
    }

    /// Sets the version; only before the item is published (see the module doc).
    #[must_use]
    pub fn versioned(self, version: u64) -> Self {
        self.0.header.header.version.store(version, Ordering::Relaxed);
        self
    }

    /// The access word: last access tick in the high 24 bits, the access
    /// counter in the low 8 (under `allkeys-tinylfu`, that policy's layout).
    pub fn access(&self) -> u32 {
        self.0.header.header.access.load(Ordering::Relaxed)
    }

    /// Records an access: `f` maps the old word to the new one. A lost race
    /// between two readers loses one update, which sampling tolerates; a
    /// compare-and-swap loop would make hot keys contend.
    pub fn touch(&self, f: impl FnOnce(u32) -> u32) {
        let a = &self.0.header.header.access;
        let old = a.load(Ordering::Relaxed);
        let new = f(old);
        if new != old {
            a.store(new, Ordering::Relaxed);
        }
    }

    /// Bytes of key and value.
    pub fn data_len(&self) -> usize {
        self.0.slice.len()
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.0.slice[..self.0.header.header.key_len as usize]
    }

    /// The value exactly as the client sent it.
    pub fn value(&self) -> &[u8] {
        &self.0.slice[self.0.header.header.key_len as usize..]
    }

    /// Absolute expiry in Unix milliseconds; `None` never expires.
    pub fn expires_at_ms(&self) -> Option<u64> {
        let at = self.0.header.header.expires_at_ms;
        (at != NEVER).then_some(at)
    }

    /// Whether the item is still visible at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_none_or(|at| at > now_ms)
    }

    /// Whether both are the same stored item (not merely the same key).
    pub fn same(&self, other: &Self) -> bool {
        std::ptr::eq(&*self.0, &*other.0)
    }

    /// The item's address: tells it from a later item under the same key
    /// without holding it (and its memory) alive. A later item allocated at
    /// the freed address looks the same; that is rare and only costs a
    /// victim chosen on the older item's score.
    pub fn address(&self) -> usize {
        std::ptr::from_ref(&*self.0).addr()
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Item({:?}, {} bytes, expires {:?})", self.key(), self.value().len(), self.expires_at_ms())
    }
}

impl Hash for Item {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<[u8]> for Item {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Two byte slices as one exact-size iterator, so the item is filled in
/// place without a temporary buffer.
struct Concat<'a> {
    first: &'a [u8],
    second: &'a [u8],
    at: usize,
}

impl Iterator for Concat<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let i = self.at;
        self.at += 1;
        match self.first.get(i) {
            Some(b) => Some(*b),
            None => self.second.get(i - self.first.len()).copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.first.len() + self.second.len()).saturating_sub(self.at);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Concat<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let item = Item::new(b"key", b"value", Some(42));
        assert_eq!(item.key(), b"key");
        assert_eq!(item.value(), b"value");
        assert_eq!(item.expires_at_ms(), Some(42));
        assert!(item.is_live(41) && !item.is_live(42));
        let forever = item.with_expiry(None);
        assert_eq!((forever.key(), forever.value(), forever.expires_at_ms()), (&b"key"[..], &b"value"[..], None));
        let long_key = vec![b'k'; 70_000];
        assert_eq!(Item::new(&long_key, b"v", None).key().len(), 70_000, "keys longer than u16 stay whole");
        let empty = Item::new(b"k", b"", Some(0));
        assert_eq!((empty.value(), empty.expires_at_ms()), (&b""[..], Some(0)), "expiry 0 is not `none`");
        assert_eq!(std::mem::size_of::<Header>(), 24, "the access word fits where the padding was");
        // The reference count, the header, the slice length.
        assert_eq!(
            8 + std::mem::size_of::<triomphe::HeaderWithLength<Header>>() as u64,
            super::super::memory::ITEM_HEADER
        );
    }

    #[test]
    fn the_access_word_survives_a_new_expiry_and_ticks_wrap() {
        let item = Item::new(b"k", b"v", None);
        item.touch(|_| 0xABCD_EF07);
        assert_eq!(item.with_expiry(Some(5)).access(), 0xABCD_EF07);
        assert_eq!(ticks_since(TICK_MASK, 1), 2, "across the wrap");
        assert_eq!(access_tick(ACCESS_TICK_MS * 3), 3);
    }

    #[test]
    fn hashes_and_compares_as_its_key() {
        use std::hash::BuildHasher;
        let s = std::hash::RandomState::new();
        let item = Item::new(b"abc", b"x", None);
        assert_eq!(s.hash_one(&item), s.hash_one(&b"abc"[..]));
        assert_eq!(item, Item::new(b"abc", b"other", Some(1)));
        assert!(Item::new(b"a", b"", None) < Item::new(b"b", b"", None));
    }
}
