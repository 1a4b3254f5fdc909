//! What the keyspace costs in memory, as `used_memory` counts it.
//!
//! A key's footprint is what the allocator hands out for its item (rounded up
//! to jemalloc's size class, the allocator the server binary uses), plus its
//! share of the map (an 8-byte pointer and the amortized node headers), plus
//! an entry in the shard's expiry index when it has a TTL. The constants
//! follow the layout (item header, 8-byte entries, amortized node headers),
//! which tests check against the types and the map's real allocations. What is
//! not counted per key (shard headers, map nodes replaced while readers hold
//! them, allocator metadata) is the difference INFO's `used_memory_rss` shows.

use super::Item;

/// Bytes an item takes ahead of its key and value: the reference count (8),
/// the header (expiry, version, key length, access word: 24) and the slice
/// length (8).
pub const ITEM_HEADER: u64 = 40;

/// A key's share of its shard's map: the 8-byte pointer, the node headers
/// amortized over their entries and the size-class rounding of nodes. The
/// map measures 12 to 18 bytes a key from 5 keys a shard to a few thousand
/// (24 at 2; see `store::trie`); the rest covers nodes freed by path
/// copying and not yet reused.
pub const MAP_SHARE: u64 = 22;

/// An entry of the expiry index (a B-tree of `(u64, Item)`, 16 bytes a
/// pair, with node overhead).
pub const EXPIRY_ENTRY: u64 = 32;

/// The size jemalloc allocates for a request of `n` bytes: 8 and 16, then
/// multiples of 16 up to 128, then four classes per doubling.
pub fn alloc_size(n: u64) -> u64 {
    match n {
        0..=8 => 8,
        9..=128 => n.div_ceil(16) * 16,
        _ => {
            // 2^k < n <= 2^(k+1): classes are spaced 2^(k-2) apart.
            let k = 63 - (n - 1).leading_zeros();
            let step = 1u64 << (k - 2);
            n.div_ceil(step) * step
        }
    }
}

/// What `item` is charged.
pub fn footprint(item: &Item) -> u64 {
    let expiry = if item.expires_at_ms().is_some() { EXPIRY_ENTRY } else { 0 };
    alloc_size(ITEM_HEADER + item.data_len() as u64) + MAP_SHARE + expiry
}

/// What an item of this key and value would be charged, before it exists.
pub fn footprint_of(key_len: usize, value_len: usize, has_ttl: bool) -> u64 {
    let expiry = if has_ttl { EXPIRY_ENTRY } else { 0 };
    alloc_size(ITEM_HEADER + key_len as u64 + value_len as u64) + MAP_SHARE + expiry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_jemallocs() {
        let classes: Vec<u64> = [1, 8, 9, 17, 48, 100, 128, 129, 160, 161, 200, 257, 1000, 4097, 20_000]
            .iter()
            .map(|&n| alloc_size(n))
            .collect();
        assert_eq!(classes, [8, 8, 16, 32, 48, 112, 128, 160, 160, 192, 224, 320, 1024, 5120, 20_480]);
    }

    #[test]
    fn a_footprint_is_known_before_the_item_exists() {
        let item = Item::new(b"key", &[0; 133], Some(5));
        assert_eq!(footprint(&item), footprint_of(3, 133, true));
        assert_eq!(footprint(&item), 192 + MAP_SHARE + EXPIRY_ENTRY);
    }
}
