use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The live value under `key`, owned.
fn value(s: &Store, key: &[u8], now_ms: u64) -> Option<Vec<u8>> {
    s.get(key, now_ms).map(|i| i.value().to_vec())
}

const T0: u64 = 1_000_000;

#[test]
fn set_get_delete_exists() {
    let s = Store::new(4);
    assert!(s.set(&b("k"), &b("v"), None, SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(value(&s, b"k", T0), Some(b("v")));
    assert!(s.exists(b"k", T0));
    assert_eq!(s.len(), 1);
    assert!(s.delete(b"k", T0).unwrap().outcome);
    assert!(!s.delete(b"k", T0).unwrap().outcome);
    assert_eq!(value(&s, b"k", T0), None);
    assert!(s.is_empty());
    assert_eq!(s.approx_bytes(), 0);
}

#[test]
fn set_conditions() {
    let s = Store::new(4);
    assert!(!s.set(&b("k"), &b("1"), None, SetCondition::IfPresent, T0).unwrap().outcome);
    assert!(s.set(&b("k"), &b("1"), None, SetCondition::IfAbsent, T0).unwrap().outcome);
    assert!(!s.set(&b("k"), &b("2"), None, SetCondition::IfAbsent, T0).unwrap().outcome);
    assert_eq!(value(&s, b"k", T0), Some(b("1")));
    assert!(s.set(&b("k"), &b("3"), None, SetCondition::IfPresent, T0).unwrap().outcome);
    assert_eq!(value(&s, b"k", T0), Some(b("3")));
}

#[test]
fn expired_keys_are_invisible_and_count_as_absent_for_conditions() {
    let s = Store::new(4);
    assert!(s.set(&b("k"), &b("v"), Some(Duration::from_millis(10)), SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(s.expiry(b"k", T0), Some(Some(T0 + 10)));
    assert_eq!(value(&s, b"k", T0 + 9), Some(b("v")));
    assert_eq!(value(&s, b"k", T0 + 10), None);
    assert!(!s.exists(b"k", T0 + 10));
    assert!(!s.expire(b"k", Duration::from_secs(1), T0 + 10).unwrap().outcome);
    assert_eq!(s.persist(b"k", T0 + 10).unwrap().outcome, PersistOutcome::Missing);
    assert!(!s.set(&b("k"), &b("x"), None, SetCondition::IfPresent, T0 + 10).unwrap().outcome);
    assert!(s.set(&b("k"), &b("y"), None, SetCondition::IfAbsent, T0 + 10).unwrap().outcome);
    assert_eq!(value(&s, b"k", T0 + 10_000), Some(b("y")));
}

#[test]
fn ttl_rounds_up_to_whole_milliseconds() {
    assert_eq!(deadline(T0, Duration::from_nanos(1)), T0 + 1);
    assert_eq!(deadline(T0, Duration::from_micros(1500)), T0 + 2);
    assert_eq!(deadline(u64::MAX - 1, Duration::from_secs(10)), u64::MAX);
}

#[test]
fn expire_and_persist() {
    let s = Store::new(4);
    assert!(s.set(&b("k"), &b("v"), None, SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(s.persist(b"k", T0).unwrap().outcome, PersistOutcome::HadNone);
    assert!(s.expire(b"k", Duration::from_millis(50), T0).unwrap().outcome);
    assert_eq!(s.expiry(b"k", T0), Some(Some(T0 + 50)));
    assert_eq!(s.persist(b"k", T0).unwrap().outcome, PersistOutcome::Removed);
    assert_eq!(s.expiry(b"k", T0), Some(None));
    // The persisted key must not be reclaimed by its old index entry.
    assert_eq!(s.reclaim_expired(T0 + 100, 100), (0, false));
    assert_eq!(value(&s, b"k", T0 + 100), Some(b("v")));
}

#[test]
fn overwriting_with_same_expiry_keeps_the_index_entry() {
    let s = Store::new(1);
    assert!(s.set(&b("k"), &b("1"), Some(Duration::from_millis(5)), SetCondition::Always, T0).unwrap().outcome);
    assert!(s.set(&b("k"), &b("2"), Some(Duration::from_millis(5)), SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(s.reclaim_expired(T0 + 5, 10), (1, false));
    assert!(s.is_empty());
}

#[test]
fn janitor_work_is_bounded_by_budget_and_only_touches_expired() {
    let s = Store::new(1);
    for i in 0..1000 {
        assert!(s.set(&b(&format!("live{i}")), &b("v"), None, SetCondition::Always, T0).unwrap().outcome);
    }
    for i in 0..250 {
        let ttl = Some(Duration::from_millis(1 + i));
        assert!(s.set(&b(&format!("exp{i}")), &b("v"), ttl, SetCondition::Always, T0).unwrap().outcome);
    }
    assert_eq!(s.reclaim_expired(T0, 100), (0, false));
    assert_eq!(s.reclaim_expired(T0 + 1000, 100), (100, true));
    assert_eq!(s.reclaim_expired(T0 + 1000, 100), (100, true));
    assert_eq!(s.reclaim_expired(T0 + 1000, 100), (50, false));
    assert_eq!(s.len(), 1000);
}

#[test]
fn a_loaded_cut_does_not_see_later_writes() {
    let s = Store::new(2);
    assert!(s.set(&b("a"), &b("1"), None, SetCondition::Always, T0).unwrap().outcome);
    let cut = s.shard_maps();
    assert!(s.set(&b("a"), &b("2"), None, SetCondition::Always, T0).unwrap().outcome);
    assert!(s.set(&b("b"), &b("3"), None, SetCondition::Always, T0).unwrap().outcome);
    let seen: HashMap<_, _> =
        cut.iter().flat_map(|m| m.iter().map(|item| (item.key().to_vec(), item.value().to_vec()))).collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[&b("a")], b("1"));
}

#[test]
fn byte_accounting_follows_overwrites() {
    let s = Store::new(1);
    assert!(s.set(b"k", &[0u8; 100], None, SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(s.approx_bytes(), 1 + 100 + ENTRY_OVERHEAD);
    assert!(s.set(b"k", &[0u8; 10], None, SetCondition::Always, T0).unwrap().outcome);
    assert_eq!(s.approx_bytes(), 1 + 10 + ENTRY_OVERHEAD);
}

#[test]
fn concurrent_writers_and_readers_agree() {
    let s = Arc::new(Store::new(8));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let k = b(&format!("t{t}-{i}"));
                    assert!(s.set(&k, &k, None, SetCondition::Always, T0).unwrap().outcome);
                    assert_eq!(value(&s, &k, T0), Some(k));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.len(), 8000);
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8, Option<u8>, u8),
    Delete(u8),
    Expire(u8, u8),
    Persist(u8),
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, any::<u8>(), proptest::option::of(1u8..20), 0u8..3).prop_map(|(k, v, t, c)| Op::Set(k, v, t, c)),
        (0u8..8).prop_map(Op::Delete),
        (0u8..8, 1u8..20).prop_map(|(k, t)| Op::Expire(k, t)),
        (0u8..8).prop_map(Op::Persist),
        (0u8..30).prop_map(Op::Tick),
    ]
}

proptest! {
    /// The store behaves like a plain map with expiry, whatever the janitor does.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..200)) {
        let s = Store::new(2);
        let mut model: HashMap<u8, (u8, Option<u64>)> = HashMap::new();
        let mut now = T0;
        for op in ops {
            model.retain(|_, (_, at)| at.is_none_or(|at| at > now));
            match op {
                Op::Set(k, v, t, c) => {
                    let cond = [SetCondition::Always, SetCondition::IfAbsent, SetCondition::IfPresent][c as usize];
                    let exists = model.contains_key(&k);
                    let expect = match cond { SetCondition::Always => true, SetCondition::IfAbsent => !exists, SetCondition::IfPresent => exists };
                    let ttl = t.map(|t| Duration::from_millis(u64::from(t)));
                    prop_assert_eq!(s.set(&[k], &[v], ttl, cond, now).unwrap().outcome, expect);
                    if expect { model.insert(k, (v, t.map(|t| now + u64::from(t)))); }
                }
                Op::Delete(k) => prop_assert_eq!(s.delete(&[k], now).unwrap().outcome, model.remove(&k).is_some()),
                Op::Expire(k, t) => {
                    let had = model.get_mut(&k).map(|e| e.1 = Some(now + u64::from(t))).is_some();
                    prop_assert_eq!(s.expire(&[k], Duration::from_millis(u64::from(t)), now).unwrap().outcome, had);
                }
                Op::Persist(k) => {
                    let expect = match model.get_mut(&k) {
                        None => PersistOutcome::Missing,
                        Some((_, None)) => PersistOutcome::HadNone,
                        Some(e) => { e.1 = None; PersistOutcome::Removed }
                    };
                    prop_assert_eq!(s.persist(&[k], now).unwrap().outcome, expect);
                }
                Op::Tick(ms) => {
                    now += u64::from(ms);
                    s.reclaim_expired(now, 3);
                }
            }
            for k in 0..8u8 {
                let live = model.get(&k).filter(|(_, at)| at.is_none_or(|at| at > now)).map(|(v, _)| vec![*v]);
                prop_assert_eq!(value(&s, &[k], now), live);
            }
        }
        s.reclaim_expired(u64::MAX, usize::MAX);
        prop_assert_eq!(s.len(), model.values().filter(|(_, at)| at.is_none()).count());
    }
}

/// Numbers changes from 1, or refuses them all.
#[derive(Default)]
struct CountingJournal {
    next: std::sync::Mutex<u64>,
    refuse: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl Journal for CountingJournal {
    fn append(&self, _change: Change<'_>) -> Result<u64, StoreError> {
        if self.refuse {
            return Err(StoreError::Journal(Arc::new(Refused)));
        }
        let mut next = self.next.lock().unwrap();
        *next += 1;
        Ok(*next)
    }
}

#[test]
fn writes_return_the_sequence_number_to_wait_on_and_zero_when_nothing_changed() {
    let s = Store::new(4).with_journal(Arc::new(CountingJournal::default()));
    assert_eq!(s.set(b"k", b"v", None, SetCondition::Always, T0).unwrap(), Written { outcome: true, seq: 1 });
    assert_eq!(s.set(b"k", b"w", None, SetCondition::IfAbsent, T0).unwrap(), Written { outcome: false, seq: 0 });
    assert_eq!(s.expire(b"k", Duration::from_secs(9), T0).unwrap(), Written { outcome: true, seq: 2 });
    assert_eq!(s.persist(b"k", T0).unwrap(), Written { outcome: PersistOutcome::Removed, seq: 3 });
    assert_eq!(s.persist(b"k", T0).unwrap(), Written { outcome: PersistOutcome::HadNone, seq: 0 });
    assert_eq!(s.delete(b"k", T0).unwrap(), Written { outcome: true, seq: 4 });
    assert_eq!(s.delete(b"k", T0).unwrap(), Written { outcome: false, seq: 0 });
}

#[test]
fn a_change_the_journal_refuses_is_not_applied() {
    let s = Store::new(4).with_journal(Arc::new(CountingJournal { refuse: true, ..Default::default() }));
    let err = s.set(b"k", b"v", None, SetCondition::Always, T0).unwrap_err();
    assert_eq!(err.to_string(), "writes are disabled: refused");
    assert!(s.get(b"k", T0).is_none());
}
