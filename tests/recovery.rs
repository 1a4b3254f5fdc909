//! Recovery from damaged and half-written data dirs, at the file level.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptomem_server::persist::snapshot_name;
use cryptomem_server::persist::{FsyncPolicy, segment_name};
use cryptomem_server::persist::{PersistConfig, PersistError, Persistence};
use cryptomem_server::persist::{TailMode, list, recover};
use cryptomem_server::store::SetCondition;
use cryptomem_server::store::{Clock, Store};
use cryptomem_testkit::log_record_offsets;

fn config() -> PersistConfig {
    PersistConfig { fsync: FsyncPolicy::Always, snapshot_after_writes: 0, ..PersistConfig::default() }
}

fn set(store: &Store, i: u32) {
    let (key, value) = (format!("k{i:03}"), format!("value {i}"));
    assert!(
        store
            .set(key.as_bytes(), value.as_bytes(), None, SetCondition::Always, Clock::System.now_ms())
            .unwrap()
            .outcome
    );
}

/// A data dir with keys 0..10 in a snapshot (cut 10) and 10..20 only in the log.
async fn build(dir: &Path, snapshot: bool) {
    let (p, _) = Persistence::open(dir, Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    for i in 0..10 {
        set(&store, i);
    }
    if snapshot {
        assert_eq!(p.snapshot().await.unwrap().cut_seq, 10);
    }
    for i in 10..20 {
        set(&store, i);
    }
    // A crash-like stop: the log is flushed, but no final snapshot is taken.
    p.log().close();
}

fn reload(dir: &Path) -> Result<(Store, cryptomem_server::persist::RecoveryReport), PersistError> {
    let store = Store::new(4);
    let report = recover(dir, &store, Clock::System.now_ms(), TailMode::Truncate)?;
    Ok((store, report))
}

fn only_segment(dir: &Path) -> PathBuf {
    let l = list(dir).unwrap();
    assert_eq!(l.segments.len(), 1, "{l:?}");
    l.segments[0].1.clone()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(at).unwrap()] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, by: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len - by).unwrap();
}

fn assert_corrupted(result: Result<impl std::fmt::Debug, PersistError>, file: &Path, reason_part: &str) -> u64 {
    match result {
        Err(PersistError::Corrupted { file: f, offset, reason }) => {
            assert_eq!(f, file);
            assert!(reason.contains(reason_part), "{reason}");
            offset
        }
        other => panic!("expected corruption in {}, got {other:?}", file.display()),
    }
}

#[tokio::test]
async fn each_keys_changes_are_replayed_in_order_across_snapshot_and_log() {
    // Recovery applies changes on several threads; a key's changes must still
    // land in file order. Every key goes through set, overwrite, delete and
    // set again, some before the snapshot and some after it.
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = Persistence::open(dir.path(), Store::new(64), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    let now = Clock::System.now_ms();
    let ttl = Some(std::time::Duration::from_secs(3600));
    let value = |k: u32, round: u32| format!("{k}-{round}").into_bytes();
    for round in 0..6u32 {
        for k in 0..3000u32 {
            let key = format!("key{k}");
            match (k + round) % 4 {
                0 => _ = store.delete(key.as_bytes(), now).unwrap(),
                1 => assert!(
                    store.set(key.as_bytes(), &value(k, round), ttl, SetCondition::Always, now).unwrap().outcome
                ),
                _ => assert!(
                    store.set(key.as_bytes(), &value(k, round), None, SetCondition::Always, now).unwrap().outcome
                ),
            }
        }
        if round == 2 {
            p.snapshot().await.unwrap();
        }
    }
    p.log().close();
    let (reloaded, report) = reload(dir.path()).unwrap();
    assert!(report.snapshot.is_some() && report.replayed > 0, "{report:?}");
    assert_eq!(reloaded.len(), store.len());
    for k in 0..3000u32 {
        let key = format!("key{k}");
        let want = store.get(key.as_bytes(), now).map(|i| (i.value().to_vec(), i.expires_at_ms()));
        let got = reloaded.get(key.as_bytes(), now).map(|i| (i.value().to_vec(), i.expires_at_ms()));
        assert_eq!(got, want, "{key}");
    }
}

#[tokio::test]
async fn snapshot_plus_log_and_log_alone_both_recover_everything() {
    for with_snapshot in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), with_snapshot).await;
        let (store, report) = reload(dir.path()).unwrap();
        assert_eq!(store.len(), 20);
        assert_eq!(store.get(b"k019", Clock::System.now_ms()).unwrap().value(), b"value 19");
        assert_eq!(report.replayed, if with_snapshot { 10 } else { 20 });
        assert_eq!(report.next_seq, 21);
        assert_eq!(report.snapshot.is_some(), with_snapshot);
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_snapshot_body_stops_recovery_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true).await;
    let snap = dir.path().join(snapshot_name(10));
    let len = std::fs::metadata(&snap).unwrap().len();
    flip(&snap, len / 2);
    let offset = assert_corrupted(reload(dir.path()), &snap, "CRC");
    assert!(offset <= len / 2 && offset > 36, "{offset}");
}

#[tokio::test]
async fn a_truncated_snapshot_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true).await;
    let snap = dir.path().join(snapshot_name(10));
    truncate(&snap, 10);
    assert_corrupted(reload(dir.path()), &snap, "truncated");
    truncate(&snap, 60);
    assert_corrupted(reload(dir.path()), &snap, "ends inside an entry");
}

#[tokio::test]
async fn a_flipped_byte_in_a_middle_log_record_stops_recovery_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let before = std::fs::read(&seg).unwrap();
    flip(&seg, 16 + 8 + 3);
    let offset = assert_corrupted(reload(dir.path()), &seg, "CRC");
    assert_eq!(offset, 16, "the first record");
    let mut after = std::fs::read(&seg).unwrap();
    after[16 + 8 + 3] ^= 0x40;
    assert_eq!(after, before, "recovery did not modify the damaged file");
}

/// Regression: a flipped bit in a record's length made the record seem to run
/// past the end of the file, so recovery "truncated a torn write" and served
/// none of the records after it.
#[tokio::test]
async fn a_flipped_length_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let before = std::fs::read(&seg).unwrap();
    let mut bytes = before.clone();
    bytes[17] ^= 0x10; // The first record's length, as the outside tester did.
    std::fs::write(&seg, &bytes).unwrap();
    let offset = assert_corrupted(reload(dir.path()), &seg, "intact record follows");
    assert_eq!(offset, 16);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing truncated");
}

/// Every single-bit flip anywhere before the last record stops recovery with
/// the damaged record's offset; none is ever taken for a torn tail.
#[tokio::test]
async fn no_flip_before_the_last_record_is_silently_dropped() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let original = std::fs::read(&seg).unwrap();
    let (_, report) = reload(dir.path()).unwrap();
    assert_eq!(report.segments[0].records, 20);
    let starts = log_record_offsets(&original);
    let last = *starts.last().unwrap();
    for at in 16..last {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut bytes = original.clone();
            bytes[at as usize] ^= bit;
            std::fs::write(&seg, &bytes).unwrap();
            let damaged = *starts.iter().rev().find(|&&s| s <= at).unwrap();
            let offset = assert_corrupted(reload(dir.path()), &seg, "");
            assert_eq!(offset, damaged, "flip {bit:#x} at {at}");
        }
    }
    // In the last record, damage is what a crash leaves: the record is dropped.
    let mut bytes = original.clone();
    bytes[last as usize + 1] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(reload(dir.path()).unwrap().0.len(), 19);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true).await;
    let seg = only_segment(dir.path());
    truncate(&seg, 5);
    let (store, report) = reload(dir.path()).unwrap();
    assert_eq!(store.len(), 19, "all but the torn last record");
    let torn = report.segments.last().unwrap().torn_at.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), torn, "truncated at the last good record");
    let (again, report) = reload(dir.path()).unwrap();
    assert_eq!(again.len(), 19);
    assert!(report.segments.iter().all(|s| s.torn_at.is_none()), "clean the second time");
}

#[tokio::test]
async fn a_garbled_last_record_and_a_zero_filled_tail_count_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    flip(&seg, len - 1);
    assert_eq!(reload(dir.path()).unwrap().0.len(), 19);

    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, bytes).unwrap();
    assert_eq!(reload(dir.path()).unwrap().0.len(), 20);
}

/// A power cut between creating the newest segment and syncing its header
/// can leave the name with zeros or garbage where the header should be.
#[tokio::test]
async fn a_newest_segment_with_a_garbled_header_and_no_records_is_torn() {
    for fill in [vec![0u8; 16], vec![0u8; 4096], b"CMLG\0\0\0\x02garbage!".to_vec()] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), false).await;
        let newest = dir.path().join(segment_name(21));
        std::fs::write(&newest, &fill).unwrap();
        let (store, report) = reload(dir.path()).unwrap();
        assert_eq!(store.len(), 20);
        assert_eq!(report.segments.last().unwrap().torn_at, Some(0));
        assert!(!newest.exists(), "removed as a segment torn while being created");
    }
}

/// The same header damage with a record after it is not a power cut's.
#[tokio::test]
async fn a_garbled_header_before_intact_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    flip(&seg, 9);
    assert_corrupted(reload(dir.path()), &seg, "header says first seq");
}

#[tokio::test]
async fn report_mode_leaves_a_torn_tail_alone() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    truncate(&seg, 3);
    let len = std::fs::metadata(&seg).unwrap().len();
    let report = recover(dir.path(), &Store::new(1), Clock::System.now_ms(), TailMode::Report).unwrap();
    assert!(report.segments[0].torn_at.is_some());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}

#[tokio::test]
async fn every_crash_point_of_a_snapshot_rotation_recovers() {
    // Crash before the rename: a temp file is left behind.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    std::fs::write(dir.path().join(".tmp-snapshot-abc"), b"half a snapshot").unwrap();
    assert_eq!(reload(dir.path()).unwrap().0.len(), 20);

    // Crash after the rename, before old segments were deleted.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let first_segment = only_segment(dir.path());
    let kept = std::fs::read(&first_segment).unwrap();
    build_snapshot_over(dir.path()).await;
    std::fs::write(&first_segment, kept).unwrap();
    let (store, report) = reload(dir.path()).unwrap();
    assert_eq!(store.len(), 25);
    assert!(report.skipped >= 20, "records already in the snapshot are skipped: {report:?}");

    // Crash while creating the new segment: its header is torn.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true).await;
    let next = list(dir.path()).unwrap().segments.last().unwrap().0 + 10;
    std::fs::write(dir.path().join(segment_name(next)), b"CMLG").unwrap();
    assert_eq!(reload(dir.path()).unwrap().0.len(), 20);
    assert!(!dir.path().join(segment_name(next)).exists(), "the torn segment is removed");
}

/// Reopens a data dir, adds 5 keys, snapshots (which deletes covered segments).
async fn build_snapshot_over(dir: &Path) {
    let (p, _) = Persistence::open(dir, Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    for i in 100..105 {
        set(&store, i);
    }
    p.snapshot().await.unwrap();
    p.log().close();
}

#[tokio::test]
async fn a_missing_segment_is_detected_as_lost_records() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    build_snapshot_over(dir.path()).await;
    // Segments now: the one after the snapshot. Add records after it, then drop a middle one.
    let (p, _) = Persistence::open(dir.path(), Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    set(&store, 200);
    p.snapshot().await.unwrap();
    set(&store, 201);
    p.log().close();
    drop(p);
    let (p, _) = Persistence::open(dir.path(), Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    set(&store, 202);
    p.log().close();
    let segments = list(dir.path()).unwrap().segments;
    assert!(segments.len() >= 2, "{segments:?}");
    // The one holding record 201, after the snapshot's cut and before the
    // last start's segment. (Not simply the first: the segment the snapshot
    // covers may still be there, as the new segment is created by the log's
    // writer thread and can appear only after the snapshot listed the files.)
    std::fs::remove_file(&segments[segments.len() - 2].1).unwrap();
    let err = reload(dir.path()).unwrap_err();
    assert!(err.to_string().contains("records are missing"), "{err}");
}

#[tokio::test]
async fn unknown_format_versions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), true).await;
    let snap = dir.path().join(snapshot_name(10));
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[7] = 9;
    std::fs::write(&snap, bytes).unwrap();
    assert_corrupted(reload(dir.path()), &snap, "version 9");

    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), false).await;
    let seg = only_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[7] = 3;
    std::fs::write(&seg, bytes).unwrap();
    assert_corrupted(reload(dir.path()), &seg, "version 3");
}

/// Loading reports each tenth of the snapshot and log bytes once, in
/// order, ending at all of them.
#[tokio::test]
async fn loading_reports_progress_by_tenths() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = Persistence::open(dir.path(), Store::new(4), Clock::System, config()).unwrap();
    let store = Arc::clone(p.store());
    for i in 0..500 {
        set(&store, i);
    }
    p.snapshot().await.unwrap();
    for i in 500..1000 {
        set(&store, i);
    }
    p.log().close();
    drop((p, store));

    let mut seen = Vec::new();
    let (p, report) = Persistence::open_reporting(
        Arc::new(cryptomem_server::persist::disk::OsDisk),
        dir.path(),
        Store::new(4),
        Clock::System,
        config(),
        &mut |progress| seen.push(progress),
    )
    .unwrap();
    assert_eq!(p.store().len(), 1000);
    assert!(report.replayed == 500);
    assert!((5..=10).contains(&seen.len()), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].done_bytes < w[1].done_bytes && w[0].items < w[1].items), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.items, 1000);
    assert!(last.done_bytes * 10 >= last.total_bytes * 9, "{last:?}");
}
