//! One stored key: the key, its value and its expiry in a single allocation.
//!
//! A map slot holds an [`Item`], a thin (8-byte) pointer to a reference
//! counted block `[count | expiry | key length | byte length | key | value]`.
//! One allocation per key instead of three (entry, key, value) saves about
//! 100 bytes per key and two `malloc`/`free` pairs per write. The thin pointer
//! keeps the persistent map's slots at 16 bytes, which matters because every
//! write copies the map nodes on its path: copying a slot is one refcount
//! increment and a 16-byte move.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use triomphe::ThinArc;

/// The fixed part of an item, ahead of its key and value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// Absolute expiry in Unix ms, meaningful when `expires` is set.
    expires_at_ms: u64,
    expires: bool,
    /// A `u32` fits the header's padding, so no key is ever cut short.
    key_len: u32,
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
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let key = &key[..key_len as usize];
        let header = Header { expires_at_ms: expires_at_ms.unwrap_or(0), expires: expires_at_ms.is_some(), key_len };
        Self(ThinArc::from_header_and_iter(header, Concat { first: key, second: value, at: 0 }))
    }

    /// The same key and value with another expiry.
    #[must_use]
    pub fn with_expiry(&self, expires_at_ms: Option<u64>) -> Self {
        Self::new(self.key(), self.value(), expires_at_ms)
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
        let h = &self.0.header.header;
        h.expires.then_some(h.expires_at_ms)
    }

    /// Whether the item is still visible at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_none_or(|at| at > now_ms)
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
