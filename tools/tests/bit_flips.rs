//! Every bit of a small data dir (a snapshot and two log segments) flipped,
//! one at a time. Each start must either refuse with the damaged file and
//! offset, or serve exactly the stored data; the one exception is the last
//! record of the newest segment, where damage is what a crash mid-write
//! leaves, so recovery drops that record and reports the torn tail. Never
//! fewer keys silently, never a panic, and `verify` flags every flip the
//! server refuses.
//!
//! In-process recovery is what `cryptomem serve` runs at start, so all
//! flips run here in a few seconds; the `cryptomem-tool verify` binary runs
//! on a sample of them (it reads with the same calls, checked in-process on
//! every flip).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cryptomem_server::persist::{FsyncPolicy, PersistConfig, PersistError, Persistence, RecoveryReport};
use cryptomem_server::persist::{SnapshotReader, TailMode, list, recover, scan};
use cryptomem_server::store::{Clock, PersistOutcome, SetCondition, Store};
use cryptomem_testkit::log_record_offsets;

const BIN: &str = env!("CARGO_BIN_EXE_cryptomem-tool");

/// key -> (value, expiry)
type Contents = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn config() -> PersistConfig {
    PersistConfig { fsync: FsyncPolicy::Always, snapshot_after_writes: 0, ..PersistConfig::default() }
}

fn set(store: &Store, key: &str, value: &str, ttl: Option<Duration>) {
    let now = Clock::System.now_ms();
    assert!(store.set(key.as_bytes(), value.as_bytes(), ttl, SetCondition::Always, now).unwrap().outcome);
}

/// Keys k00..k07 in a snapshot (some with a TTL), then sets, overwrites,
/// deletes and expiry changes in the segment after it, then more in the
/// segment a restart begins.
async fn build(dir: &Path) {
    let hour = Some(Duration::from_secs(3600));
    let (p, _) = Persistence::open(dir, Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    for i in 0..8 {
        set(&store, &format!("k{i:02}"), &format!("snapshot value {i}"), (i % 3 == 0).then_some(hour).flatten());
    }
    p.snapshot().await.unwrap();
    let now = Clock::System.now_ms();
    for i in 8..12 {
        set(&store, &format!("k{i:02}"), &format!("first segment {i}"), None);
    }
    set(&store, "k01", "overwritten", hour);
    assert!(store.delete(b"k02", now).unwrap().outcome);
    assert!(store.expire(b"k04", Duration::from_secs(7200), now).unwrap().outcome);
    p.log().close();
    drop((p, store));

    let (p, _) = Persistence::open(dir, Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    for i in 12..16 {
        set(&store, &format!("k{i:02}"), &format!("second segment {i}"), hour);
    }
    assert_eq!(store.persist(b"k00", now).unwrap().outcome, PersistOutcome::Removed);
    assert!(store.delete(b"k09", now).unwrap().outcome);
    set(&store, "k05", "", None);
    set(&store, "k16", "the last record", None);
    p.log().close();
}

fn contents(store: &Store) -> Contents {
    let mut all = Contents::new();
    for map in store.shard_maps() {
        for item in map.iter() {
            all.insert(item.key().to_vec(), (item.value().to_vec(), item.expires_at_ms()));
        }
    }
    all
}

fn reload(dir: &Path) -> Result<(Contents, RecoveryReport), PersistError> {
    let store = Store::new(4);
    // Nothing in the data expires within the test: the TTLs are hours.
    let report = recover(dir, &store, Clock::System.now_ms(), TailMode::Truncate)?;
    Ok((contents(&store), report))
}

/// What `cryptomem-tool verify` checks, with the same calls: every snapshot
/// entry, then every log record. True when it would report the dir clean.
fn verify_in_process(dir: &Path) -> bool {
    let Ok(listing) = list(dir) else { return false };
    for (_, path) in &listing.snapshots {
        let read = SnapshotReader::open(path).and_then(|mut r| {
            while r.next_entry()?.is_some() {}
            Ok(())
        });
        if read.is_err() {
            return false;
        }
    }
    scan(dir, TailMode::Report, |_| {}).is_ok_and(|r| r.segments.iter().all(|s| s.torn_at.is_none()))
}

fn verify_binary(dir: &Path) -> bool {
    let out = Command::new(BIN).args(["verify", "--data"]).arg(dir).output().unwrap();
    out.status.success()
}

#[derive(Debug, Default)]
struct Outcomes {
    refused: u64,
    served_exactly: u64,
    torn_tail_dropped: u64,
    binary_checked: u64,
}

#[tokio::test]
async fn every_bit_flipped_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path()).await;
    let listing = list(dir.path()).unwrap();
    assert_eq!((listing.snapshots.len(), listing.segments.len()), (1, 2), "{listing:?}");
    let files: Vec<PathBuf> = listing.snapshots.iter().chain(&listing.segments).map(|(_, path)| path.clone()).collect();
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let restore = || {
        for (file, bytes) in files.iter().zip(&originals) {
            std::fs::write(file, bytes).unwrap();
        }
    };

    let (stored, report) = reload(dir.path()).unwrap();
    assert_eq!(stored.len(), 15, "k00..k16 without k02 and k09");
    assert!(verify_in_process(dir.path()) && verify_binary(dir.path()), "the undamaged dir verifies");
    // What a torn last record leaves: the newest segment's last record gone.
    let newest = files.last().unwrap();
    let last_record_at = *log_record_offsets(originals.last().unwrap()).last().unwrap();
    assert_eq!(report.segments.last().unwrap().len, originals.last().unwrap().len() as u64);
    std::fs::write(newest, &originals.last().unwrap()[..usize::try_from(last_record_at).unwrap()]).unwrap();
    let (without_last, _) = reload(dir.path()).unwrap();
    assert_ne!(without_last, stored);
    restore();

    let mut seen = Outcomes::default();
    for (f, file) in files.iter().enumerate() {
        for at in 0..originals[f].len() {
            for bit in 0..8 {
                let mut bytes = originals[f].clone();
                bytes[at] ^= 1 << bit;
                std::fs::write(file, &bytes).unwrap();
                let what = format!("{} byte {at} bit {bit}", file.display());
                let result = catch_unwind(AssertUnwindSafe(|| reload(dir.path())))
                    .unwrap_or_else(|_| panic!("recovery panicked: {what}"));
                match result {
                    Ok((got, _)) if got == stored => seen.served_exactly += 1,
                    Ok((got, report)) => {
                        let in_last_record = f == files.len() - 1 && at as u64 >= last_record_at;
                        let torn = report.segments.last().is_some_and(|s| s.torn_at == Some(last_record_at));
                        assert!(
                            in_last_record && torn && got == without_last,
                            "served different data without refusing: {what}: {} keys of {}",
                            got.len(),
                            stored.len()
                        );
                        seen.torn_tail_dropped += 1;
                    }
                    Err(PersistError::Corrupted { file: damaged, offset, reason }) => {
                        assert!(files.contains(&damaged), "{what}: names {}", damaged.display());
                        let message = PersistError::Corrupted { file: damaged, offset, reason }.to_string();
                        assert!(message.contains("byte offset"), "{what}: {message}");
                        seen.refused += 1;
                        // Recovery may have cut nothing on a refusal; put
                        // the flipped bytes back for verify either way.
                        restore();
                        std::fs::write(file, &bytes).unwrap();
                        assert!(!verify_in_process(dir.path()), "verify passes a dir the server refuses: {what}");
                        if seen.refused % 97 == 1 {
                            assert!(!verify_binary(dir.path()), "cryptomem-tool verify passes: {what}");
                            seen.binary_checked += 1;
                        }
                    }
                    Err(other) => panic!("not a corruption report: {what}: {other}"),
                }
                restore();
            }
        }
    }
    let total: usize = originals.iter().map(Vec::len).sum::<usize>() * 8;
    eprintln!("{total} flips over {} bytes in {} files: {seen:?}", total / 8, files.len());
    assert_eq!(seen.refused + seen.served_exactly + seen.torn_tail_dropped, total as u64);
    assert!(seen.refused > 0 && seen.binary_checked > 0);
}
