//! A key listing over a point-in-time view of the keyspace: the state of a
//! SCAN cursor.
//!
//! The view is every shard's persistent map as loaded when the scan starts;
//! later writes make new maps and leave these alone, so the listing returns
//! each key of the view exactly once however the keyspace changes. What it
//! costs is what the view shares with nothing live any more: the items
//! (key and value) and map nodes that writes replaced or deleted since the
//! start, in the part not walked yet (walked shards are let go).

use std::sync::Arc;

use super::trie::OwnedIter;
use super::{Item, ShardMap};

/// Where a scan is in its view.
pub struct KeyScan {
    maps: Vec<Arc<ShardMap>>,
    /// The next shard to start walking.
    next_shard: usize,
    walking: Option<OwnedIter>,
    /// A key taken from the walk that did not fit the last page.
    held: Option<Item>,
}

/// One page of a scan.
pub struct Page {
    /// The keys, in the order walked.
    pub items: Vec<Item>,
    /// Whether the view has been walked to its end.
    pub done: bool,
}

/// How much one page may hold and cost.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Most keys in the page.
    pub keys: usize,
    /// Most key bytes in the page (each key also counts 2 bytes of length).
    pub bytes: usize,
    /// Most keys looked at, matching or not.
    pub examined: usize,
}

impl KeyScan {
    pub(super) fn new(maps: Vec<Arc<ShardMap>>) -> Self {
        Self { maps, next_shard: 0, walking: None, held: None }
    }

    /// The next page of keys that are live at `now_ms` and `wanted`.
    pub fn next_page(&mut self, limits: PageLimits, now_ms: u64, wanted: impl Fn(&[u8]) -> bool) -> Page {
        let mut items = Vec::new();
        let (mut bytes, mut examined) = (0usize, 0usize);
        while items.len() < limits.keys && examined < limits.examined {
            let Some(item) = self.held.take().or_else(|| self.next_item()) else {
                return Page { items, done: true };
            };
            examined += 1;
            if !item.is_live(now_ms) || !wanted(item.key()) {
                continue;
            }
            let size = 2 + item.key().len();
            if bytes + size > limits.bytes && !items.is_empty() {
                self.held = Some(item);
                break;
            }
            bytes += size;
            items.push(item);
        }
        let done = self.held.is_none() && self.walking.is_none() && self.next_shard >= self.maps.len();
        Page { items, done }
    }

    fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(walk) = &mut self.walking {
                if let Some(item) = walk.next() {
                    return Some(item);
                }
                self.walking = None;
            }
            let map = self.maps.get(self.next_shard)?;
            self.walking = Some(map.owned_iter());
            // The walk holds what it needs of the map from here on.
            self.maps[self.next_shard] = Arc::default();
            self.next_shard += 1;
        }
    }
}
