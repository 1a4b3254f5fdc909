//! Open SCAN cursors: the point-in-time listings clients are paging
//! through (the guarantee and costs are in the protocol doc's `# SCAN`).
//!
//! A cursor is a random non-zero u64, bound to the token that started it
//! and to its prefix. At most [`MAX_OPEN`] are open; one unused for
//! [`IDLE_LIMIT`] is dropped by the janitor, which frees the map nodes it
//! kept alive. A page is built with the cursor taken out of the table, so
//! the table's lock is never held while keys are walked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::Principal;
use crate::protocol::Response;
use crate::store::{KeyScan, PageLimits, Store};

/// Most cursors open at once, server-wide.
pub const MAX_OPEN: usize = 1024;
/// A cursor unused this long is dropped.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The table of open cursors.
pub struct Scans {
    open: Mutex<HashMap<u64, Cursor>>,
    max_open: usize,
    idle_limit: Duration,
}

impl Default for Scans {
    fn default() -> Self {
        Self::with_limits(MAX_OPEN, IDLE_LIMIT)
    }
}

struct Cursor {
    token_id: String,
    prefix: Bytes,
    scan: KeyScan,
    last_used: Instant,
}

impl Scans {
    /// A table with other limits than the server's (tests).
    pub fn with_limits(max_open: usize, idle_limit: Duration) -> Self {
        Self { open: Mutex::default(), max_open, idle_limit }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cursor>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cursors open now.
    pub fn open_count(&self) -> usize {
        self.table().len()
    }

    /// Drops cursors unused for [`IDLE_LIMIT`].
    pub fn drop_idle(&self) {
        let now = Instant::now();
        self.table().retain(|_, c| now.duration_since(c.last_used) < self.idle_limit);
    }

    /// Answers one SCAN request of `who`.
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &self,
        store: &Store,
        who: &Principal,
        cursor: u64,
        count: u32,
        prefix: Bytes,
        now_ms: u64,
        max_bytes: usize,
    ) -> Response {
        let mut open = if cursor == 0 {
            self.drop_idle();
            if self.open_count() >= self.max_open {
                let message = format!("{} scans are open; finish one or retry later", self.max_open);
                return Response::error("BUSY", &message);
            }
            Cursor { token_id: who.token_id.clone(), prefix, scan: store.scan(), last_used: Instant::now() }
        } else {
            let taken = self.table().remove(&cursor);
            match taken {
                Some(c) if c.last_used.elapsed() >= self.idle_limit => return no_cursor(),
                Some(c) if c.token_id != who.token_id => {
                    // Not this token's to use, nor to spoil for its owner.
                    self.table().insert(cursor, c);
                    return no_cursor();
                }
                Some(c) if c.prefix != prefix => {
                    self.table().insert(cursor, c);
                    return Response::error("ERR", "a SCAN cursor continues with the prefix it started with");
                }
                Some(c) => c,
                None => return no_cursor(),
            }
        };
        let count = count as usize;
        let limits = PageLimits { keys: count, bytes: max_bytes.saturating_sub(12), examined: (10 * count).max(1000) };
        let wanted = |key: &[u8]| key.starts_with(&open.prefix) && who.may_touch(key);
        let page = open.scan.next_page(limits, now_ms, wanted);
        let keys: Vec<&[u8]> = page.items.iter().map(crate::store::Item::key).collect();
        if page.done {
            return Response::scan(0, &keys);
        }
        let id = loop {
            let id = fastrand::u64(1..);
            if !self.table().contains_key(&id) {
                break id;
            }
        };
        let response = Response::scan(id, &keys);
        open.last_used = Instant::now();
        // The old id is not reused: a client repeating a page by mistake gets
        // NOCURSOR instead of the page after it.
        self.table().insert(id, open);
        response
    }
}

fn no_cursor() -> Response {
    Response::error("NOCURSOR", "unknown, finished or expired SCAN cursor (or another token's); start again from 0")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Role;
    use crate::store::SetCondition;

    fn who(id: &str, prefixes: &[&str]) -> Principal {
        Principal {
            token_id: id.into(),
            role: Role::Read,
            prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect::<Vec<_>>().into(),
        }
    }

    fn store(keys: usize) -> Store {
        let store = Store::new(8);
        for i in 0..keys {
            let _ = store.set(format!("k{i}").as_bytes(), b"v", None, SetCondition::Always, 0).unwrap();
        }
        store
    }

    fn code(r: &Response) -> String {
        r.error_parts().map(|(c, _)| c).unwrap_or_default()
    }

    #[test]
    fn an_idle_cursor_is_dropped_and_answers_nocursor() {
        let scans = Scans::with_limits(8, Duration::from_millis(50));
        let store = store(100);
        let me = who("a", &[]);
        let first = scans.page(&store, &me, 0, 10, Bytes::new(), 0, 1 << 20);
        let (cursor, keys) = first.parse_scan().unwrap();
        assert_eq!((keys.len(), scans.open_count()), (10, 1));
        std::thread::sleep(Duration::from_millis(80));
        scans.drop_idle();
        assert_eq!(scans.open_count(), 0, "the janitor's pass frees it");
        assert_eq!(code(&scans.page(&store, &me, cursor, 10, Bytes::new(), 0, 1 << 20)), "NOCURSOR");
    }

    #[test]
    fn the_open_cursor_limit_answers_busy_and_finished_scans_free_their_place() {
        let scans = Scans::with_limits(2, IDLE_LIMIT);
        let store = Arc::new(store(50));
        let me = who("a", &[]);
        for _ in 0..2 {
            assert!(scans.page(&store, &me, 0, 10, Bytes::new(), 0, 1 << 20).parse_scan().is_ok());
        }
        assert_eq!(code(&scans.page(&store, &me, 0, 10, Bytes::new(), 0, 1 << 20)), "BUSY");
        // A scan that finishes in one page holds no place.
        let table = Scans::with_limits(1, IDLE_LIMIT);
        let (cursor, keys) = table.page(&store, &me, 0, 100, Bytes::new(), 0, 1 << 20).parse_scan().unwrap();
        assert_eq!((cursor, keys.len(), table.open_count()), (0, 50, 0));
    }

    #[test]
    fn another_tokens_cursor_or_prefix_is_refused() {
        let scans = Scans::default();
        let store = store(100);
        let (cursor, _) = scans.page(&store, &who("a", &[]), 0, 10, Bytes::new(), 0, 1 << 20).parse_scan().unwrap();
        assert_eq!(code(&scans.page(&store, &who("b", &[]), cursor, 10, Bytes::new(), 0, 1 << 20)), "NOCURSOR");
        let mut cursor = cursor;
        let other_prefix = scans.page(&store, &who("a", &[]), cursor, 10, Bytes::from_static(b"k1"), 0, 1 << 20);
        assert_eq!(code(&other_prefix), "ERR");
        // Still usable by its owner with its own prefix, to the end.
        let mut total = 10;
        while cursor != 0 {
            let (next, keys) =
                scans.page(&store, &who("a", &[]), cursor, 10, Bytes::new(), 0, 1 << 20).parse_scan().unwrap();
            total += keys.len();
            cursor = next;
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn pages_respect_the_byte_limit_without_losing_keys() {
        let scans = Scans::default();
        let store = store(300);
        let me = who("a", &[]);
        let (mut cursor, mut all) = (0, Vec::new());
        loop {
            let (next, keys) = scans.page(&store, &me, cursor, 1000, Bytes::new(), 0, 12 + 40).parse_scan().unwrap();
            assert!(keys.iter().map(|k| 2 + k.len()).sum::<usize>() <= 40 || keys.len() == 1);
            all.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 300);
    }
}
