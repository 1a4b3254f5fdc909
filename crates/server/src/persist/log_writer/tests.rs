//! The writer against a disk that fills up and empties again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use crate::persist::disk::faults::FaultyDisk;
use crate::persist::log::{FsyncPolicy, Log, LogError};
use crate::persist::recovery::{TailMode, scan};
use crate::store::Journal;

fn open(dir: &Path, disk: &FaultyDisk, policy: FsyncPolicy) -> Log {
    Log::open_on(Arc::new(disk.clone()), dir, 1, (0, 0), policy).unwrap()
}

fn append(log: &Log, i: u64) -> Result<u64, crate::store::StoreError> {
    let key = format!("key-{i}");
    log.append(crate::store::Change::Set { key: key.as_bytes(), value: &[7; 100], expires_at_ms: None })
}

/// Polls for up to 5 s.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The last sequence number a fresh recovery of `dir` finds (recovery checks
/// they are contiguous), and whether the log ends in a partial record.
fn recovered(dir: &Path) -> (u64, bool) {
    let report = scan(dir, TailMode::Report, |_| {}).unwrap();
    (report.next_seq - 1, report.segments.iter().any(|s| s.torn_at.is_some()))
}

/// As [`recovered`], for a log that must end in whole records.
fn recovered_seqs(dir: &Path) -> u64 {
    let (last, torn) = recovered(dir);
    assert!(!torn, "no half-written record");
    last
}

/// Regression: under everysec a failed write dropped the records it carried,
/// although their writes had been acknowledged.
#[test]
fn a_full_disk_keeps_acknowledged_records_and_writes_them_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::EverySec);
    for i in 1..=50 {
        assert_eq!(append(&log, i).unwrap(), i);
    }
    assert!(eventually(|| recovered_seqs(dir.path()) == 50));

    disk.0.full.store(true, SeqCst);
    let mut acknowledged = 50;
    // Appends are acknowledged until the writer meets the full disk.
    while let Ok(seq) = append(&log, acknowledged + 1) {
        acknowledged = seq;
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(acknowledged > 50, "some writes were acknowledged into the buffer before the failure");
    let refusal = log.refusal().unwrap();
    assert!(refusal.contains("No space left") && refusal.contains("retrying"), "{refusal}");
    assert!(log.status().stalled.is_some());
    let missing = log.not_durable().unwrap();
    assert!(*missing.start() <= 51 && *missing.end() == acknowledged, "{missing:?}");
    // Retries go on, each cut back so no half record stays.
    assert!(eventually(|| disk.0.failed_appends.load(SeqCst) >= 3));
    // Between a failed attempt and the next, the half it wrote (whole records
    // and a partial one) stands at the end until the retry cuts it back.
    let (on_disk, _) = recovered(dir.path());
    assert!((50..=acknowledged).contains(&on_disk), "{on_disk}");

    disk.0.full.store(false, SeqCst);
    assert!(eventually(|| log.refusal().is_none()), "writes are accepted again");
    assert_eq!(append(&log, 0).unwrap(), acknowledged + 1);
    log.close();
    assert_eq!(recovered_seqs(dir.path()), acknowledged + 1, "every acknowledged record is in the log");
    assert_eq!(log.not_durable(), None);
}

#[test]
fn closing_on_a_full_disk_gives_up_after_a_bounded_wait_and_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::EverySec);
    for i in 1..=10 {
        append(&log, i).unwrap();
    }
    assert!(eventually(|| recovered_seqs(dir.path()) == 10));
    disk.0.full.store(true, SeqCst);
    // The writer may meet the full disk before all ten are in, and from
    // then on appends are refused: the first is always acknowledged.
    let mut acknowledged = 10;
    while acknowledged < 20 {
        let Ok(seq) = append(&log, acknowledged + 1) else { break };
        acknowledged = seq;
    }
    assert!(acknowledged > 10);
    let started = Instant::now();
    log.close();
    assert!(started.elapsed() >= crate::persist::log::CLOSE_RETRY, "retried before giving up");
    assert_eq!(log.not_durable(), Some(11..=acknowledged));
    assert!(log.status().failed.is_some());
    assert_eq!(recovered_seqs(dir.path()), 10, "the log holds a clean prefix");

    // A snapshot that holds them makes them safe: nothing is reported missing.
    log.snapshot_written(acknowledged);
    assert_eq!(log.not_durable(), None);
}

#[test]
fn with_always_a_failed_write_stops_the_log_and_tells_the_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::Always);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seq = append(&log, 1).unwrap();
    runtime.block_on(log.wait_durable(seq)).unwrap();
    disk.0.full.store(true, SeqCst);
    let seq = append(&log, 2).unwrap();
    let err = runtime.block_on(log.wait_durable(seq)).unwrap_err();
    assert!(matches!(&err, LogError::Failed(m) if m.contains("No space left")), "{err}");
    assert_eq!(log.status().durable_seq, 1);
    assert!(runtime.block_on(log.wait_failed()).is_some());
    disk.0.full.store(false, SeqCst);
    assert!(append(&log, 3).is_err(), "no retry under always: the failure is final");
}

#[test]
fn a_failed_fsync_under_everysec_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::EverySec);
    disk.0.fsync_fails.store(true, SeqCst);
    append(&log, 1).unwrap();
    assert!(eventually(|| log.status().failed.is_some()), "the fsync a second later fails");
    let refusal = log.refusal().unwrap();
    assert!(refusal.contains("fsync"), "{refusal}");
    disk.0.fsync_fails.store(false, SeqCst);
    assert!(append(&log, 2).is_err());
    assert_eq!(log.not_durable(), Some(1..=1));
}

#[test]
fn a_buffer_grown_by_a_backlog_is_given_back_after_it_is_written() {
    let grown = Vec::with_capacity(16 * super::BUFFER_KEEP);
    let reused = super::reusable(grown);
    assert!(reused.is_empty());
    assert!(reused.capacity() <= super::BUFFER_KEEP + super::BUFFER_KEEP / 2, "{}", reused.capacity());
    let normal = Vec::with_capacity(super::BUFFER_KEEP);
    assert_eq!(super::reusable(normal).capacity(), super::BUFFER_KEEP, "a busy writer's buffer is not reallocated");
}

/// Appends records `keys` (about 120 bytes each) while the writer sits in
/// a 1 s fsync, so that they pile up in the buffer; returns the last
/// sequence number. Later fsyncs take no time.
fn pile_up(log: &Log, disk: &FaultyDisk, keys: std::ops::Range<u64>) -> u64 {
    disk.0.sync_delay_ms.store(1000, SeqCst);
    let last = keys.map(|i| append(log, i).unwrap()).last().unwrap_or(0);
    disk.0.sync_delay_ms.store(0, SeqCst);
    last
}

/// Regression (issue 9, item 7): during a slow fsync appends pile up and
/// both buffers grow to the backlog; they kept that size for good.
#[test]
fn buffers_grown_during_a_slow_fsync_shrink_once_the_writer_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::Always);
    // About 12 MB while the writer sits in a 1 s fsync.
    pile_up(&log, &disk, 0..100_000);
    let grown = crate::persist::log::lock(&log.shared.state).buf.capacity();
    assert!(grown > 2 * super::BUFFER_KEEP, "the backlog grew the buffer: {grown}");
    // Two more batches pass both buffers through the writer.
    for round in 0..2u64 {
        let seq = append(&log, 1_000_000 + round).unwrap();
        assert!(eventually(|| log.status().durable_seq >= seq));
    }
    let kept = crate::persist::log::lock(&log.shared.state).buf.capacity();
    assert!(kept <= super::BUFFER_KEEP, "buffer kept {kept} bytes after the backlog was written");
    log.close();
}

/// A burst's buffers are given back once the writer has nothing to write:
/// an idle server held 2 x 2 MiB it had no use for.
#[test]
fn the_buffers_shrink_when_the_writer_goes_idle() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::Always);
    // About 1.2 MB arrives while the writer sits in the first record's fsync.
    let mut last = pile_up(&log, &disk, 0..10_000);
    let grown = log.buffered_bytes();
    assert!(grown > 4 * super::IDLE_KEEP as u64, "the burst grew the buffer: {grown}");
    assert!(eventually(|| log.status().durable_seq >= last));
    assert!(
        eventually(|| log.buffered_bytes() <= super::IDLE_KEEP as u64),
        "an idle writer's buffer keeps {} bytes",
        log.buffered_bytes()
    );
    // And a burst after idling still lands whole.
    for i in 10_000..20_000 {
        last = append(&log, i).unwrap();
    }
    assert!(eventually(|| log.status().durable_seq >= last));
    log.close();
    assert_eq!(recovered_seqs(dir.path()), last);
}

/// Item 5 of issue 11: a disk behind the writes makes writers wait instead
/// of growing the buffer without bound, and lets them go once it catches up.
#[tokio::test]
async fn a_backlog_makes_writers_wait_until_the_writer_takes_it() {
    use crate::persist::log::BACKLOG_LIMIT;
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::Always);
    disk.0.sync_delay_ms.store(1500, SeqCst);
    append(&log, 0).unwrap();
    // The writer has the first record and sits in its fsync.
    assert!(eventually(|| crate::persist::log::lock(&log.shared.state).buf.is_empty()));
    log.wait_for_room().await;
    assert_eq!(log.backlog_waits(), 0, "no wait below the limit");
    let mut last = 0;
    let mut i = 1;
    while !log.backlogged() {
        last = append(&log, i).unwrap();
        i += 1;
        assert!(i < 10 * BACKLOG_LIMIT as u64 / 100, "never backlogged");
    }
    let waited = tokio::time::timeout(Duration::from_millis(300), log.wait_for_room()).await;
    assert!(waited.is_err(), "a writer waits while the disk is behind");
    disk.0.sync_delay_ms.store(0, SeqCst);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), log.wait_for_room()).await.expect("released once the fsync returns");
    assert!(started.elapsed() >= Duration::from_millis(500), "released by the writer, not at once");
    assert!(!log.backlogged());
    assert_eq!(log.backlog_waits(), 2);
    // Every appended record is kept and written.
    log.wait_durable(last).await.unwrap();
    log.close();
    assert_eq!(recovered_seqs(dir.path()), last);
}

/// A log that stops lets its waiting writers go, to be refused.
#[tokio::test]
async fn a_failing_log_releases_waiting_writers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    let log = open(dir.path(), &disk, FsyncPolicy::Always);
    disk.0.sync_delay_ms.store(1000, SeqCst);
    disk.0.fsync_fails.store(true, SeqCst);
    append(&log, 0).unwrap();
    assert!(eventually(|| crate::persist::log::lock(&log.shared.state).buf.is_empty()));
    let mut i = 1;
    while !log.backlogged() {
        append(&log, i).unwrap();
        i += 1;
    }
    tokio::time::timeout(Duration::from_secs(5), log.wait_for_room()).await.expect("released when the log fails");
    assert!(matches!(append(&log, i), Err(crate::store::StoreError::Journal(_))), "then refused");
}
