//! Every decoder of bytes from disk, fed arbitrary bytes and mutated valid
//! inputs: whole snapshot files, whole log segments, and the token table
//! file (record and entry payloads: `persist::frame`'s unit tests). Each must give an error
//! or data that was really written, never a panic; a damaged log never
//! yields a record that was not written.
//!
//! 2,000 cases per property by default; `PROPTEST_CASES=1000000 cargo test
//! --release -p cryptomem-server --test fuzz_decoders` is the long run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;

use cryptomem_testkit::{cases, mutate, mutations};

use cryptomem_server::auth::{Role, TokenRecord, TokenTable};
use cryptomem_server::persist::{Found, LogRecord, SnapshotEntry, SnapshotReader, TailMode, list, scan};
use cryptomem_server::persist::{FsyncPolicy, PersistConfig, Persistence};
use cryptomem_server::store::{Clock, PersistOutcome, SetCondition, Store};

/// Every allocation in this binary counts against a 64 MiB cap on live
/// bytes (all properties together): a decoder that sized a buffer from a
/// length in its input, beyond the limits it was given, would hit the cap
/// and abort the run instead of passing by luck on a big machine.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 64 << 20);

/// A valid data dir's files, written once: (snapshot bytes, segment bytes,
/// the records the segment holds).
struct Fixture {
    snapshot: Vec<u8>,
    snapshot_name: String,
    segment: Vec<u8>,
    segment_name: String,
    records: Vec<LogRecord>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let config =
                PersistConfig { fsync: FsyncPolicy::Always, snapshot_after_writes: 0, ..PersistConfig::default() };
            let (p, _) = Persistence::open(dir.path(), Store::new(2), Clock::System, config).unwrap();
            let store = Arc::clone(p.store());
            let now = Clock::System.now_ms();
            let ttl = Some(Duration::from_secs(3600));
            for i in 0..6u8 {
                assert!(
                    store
                        .set(&[b'k', i], &vec![i; usize::from(i) * 3], ttl, SetCondition::Always, now)
                        .unwrap()
                        .outcome
                );
            }
            p.snapshot().await.unwrap();
            for i in 4..10u8 {
                assert!(store.set(&[b'k', i], &[0xAB; 7], None, SetCondition::Always, now).unwrap().outcome);
            }
            assert!(store.delete(b"k\x01", now).unwrap().outcome);
            assert!(store.expire(b"k\x02", Duration::from_secs(60), now).unwrap().outcome);
            assert_eq!(store.persist(b"k\x03", now).unwrap().outcome, PersistOutcome::Removed);
            p.log().close();
        });
        let listing = list(dir.path()).unwrap();
        let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        let (snap, seg) = (&listing.snapshots[0].1, &listing.segments.last().unwrap().1);
        let mut records = Vec::new();
        scan(dir.path(), TailMode::Report, |found| {
            if let Found::Record(r) = found {
                records.push(r);
            }
        })
        .unwrap();
        assert_eq!(records.len(), 9);
        Fixture {
            snapshot: std::fs::read(snap).unwrap(),
            snapshot_name: name(snap),
            segment: std::fs::read(seg).unwrap(),
            segment_name: name(seg),
            records,
        }
    })
}

/// Reads every entry of a snapshot file; the entries, or the error.
fn read_snapshot(path: &Path) -> Result<Vec<SnapshotEntry>, String> {
    let mut reader = SnapshotReader::open(path).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    while let Some(e) = reader.next_entry().map_err(|e| e.to_string())? {
        entries.push(e);
    }
    Ok(entries)
}

fn a_token_table() -> TokenTable {
    let mut table = TokenTable::new();
    table.insert(TokenRecord {
        id: "0123456789ab".into(),
        hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        role: Role::Write,
        prefixes: vec!["app:".into()],
        label: "fuzz".into(),
        created_unix_ms: 1,
    });
    table
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn damaged_snapshots_fail_cleanly(m in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&f.snapshot_name);
        let intact = read_snapshot(&{ std::fs::write(&path, &f.snapshot).unwrap(); path.clone() }).unwrap();
        let damaged = mutate(f.snapshot.clone(), &m);
        std::fs::write(&path, &damaged).unwrap();
        if let Ok(entries) = read_snapshot(&path) {
            // Only bytes past the trailer can be changed without a refusal.
            prop_assert!(damaged.starts_with(&f.snapshot), "a damaged snapshot was read");
            prop_assert_eq!(entries, intact);
        }
        std::fs::write(&path, &junk).unwrap();
        prop_assert!(read_snapshot(&path).is_err());
    }

    #[test]
    fn damaged_segments_never_yield_unwritten_records(m in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = fixture();
        for bytes in [mutate(f.segment.clone(), &m), junk.clone()] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(&f.segment_name), &bytes).unwrap();
            let mut read = Vec::new();
            let result = scan(dir.path(), TailMode::Report, |found| {
                if let Found::Record(r) = found {
                    read.push(r);
                }
            });
            // Whatever is read, before an error or a torn tail, is what was written, in order.
            prop_assert!(read.len() <= f.records.len());
            prop_assert_eq!(&read[..], &f.records[..read.len()]);
            if let Ok(report) = result {
                let torn = report.segments.iter().any(|s| s.torn_at.is_some());
                prop_assert!(torn || read.len() == f.records.len() || bytes.len() < f.segment.len());
            }
        }
    }

    #[test]
    fn token_tables_parse_or_fail_cleanly(text in ".{0,200}", m in mutations()) {
        let path = Path::new("tokens.toml");
        let _ = TokenTable::parse(&text, path);
        let valid = a_token_table().to_toml();
        let damaged = String::from_utf8_lossy(&mutate(valid.into_bytes(), &m)).into_owned();
        if let Err(e) = TokenTable::parse(&damaged, path) {
            prop_assert!(!e.to_string().contains("$argon2id$v=19$m=8"), "no hash in the message: {e}");
        }
    }
}
