//! Startup recovery: newest snapshot plus the log records after its cut.
//!
//! Rules:
//! - The newest snapshot (highest cut in its name) is loaded; if it is
//!   damaged, recovery stops (older snapshots and the segments they would
//!   need are gone by then, so falling back would silently lose data).
//! - Segments are replayed in order; records at or below the cut are skipped.
//!   Sequence numbers must go up by exactly one; a gap means lost records and
//!   stops recovery.
//! - Keys whose expiry has passed are dropped.
//! - Reading and checking the files is one thread; applying what it read to
//!   the store is spread over one thread per core, each owning a fixed set
//!   of shards, so every key's snapshot entry and log records are applied by
//!   one thread in file order.
//! - The end of the newest segment may be torn by a crash mid-write: a last
//!   record cut short, a last record whose CRC fails and that ends exactly at
//!   the end of the file, or a zero-filled tail. That tail is truncated (with
//!   a warning naming file and offset) when recovering for the server, and
//!   reported when only checking. Any other damage stops recovery with the
//!   file and offset.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::PersistError;
use super::frame::{FRAME_HEADER_LEN, LogRecord, MAX_PAYLOAD, SnapshotEntry, decode};
use super::log::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION, parse_segment_name};
use super::snapshot::{SnapshotHeader, SnapshotReader, parse_snapshot_name};
use crate::store::Store;

/// Snapshot and segment files in a data dir, each sorted by sequence number.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// (cut_seq, path).
    pub snapshots: Vec<(u64, PathBuf)>,
    /// (first_seq, path).
    pub segments: Vec<(u64, PathBuf)>,
}

/// Lists the persistence files of `dir`.
///
/// # Errors
/// I/O errors reading the directory.
pub fn list(dir: &Path) -> Result<Listing, PersistError> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir).map_err(|source| PersistError::Io { file: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| PersistError::Io { file: dir.to_path_buf(), source })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_snapshot_name(name) {
            listing.snapshots.push((seq, entry.path()));
        } else if let Some(seq) = parse_segment_name(name) {
            listing.segments.push((seq, entry.path()));
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// What to do with a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailMode {
    /// Cut it off (the server at startup).
    Truncate,
    /// Only report it (checking tools).
    Report,
}

/// What one segment held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// First sequence number per the header.
    pub first_seq: u64,
    /// Records read.
    pub records: u64,
    /// Sequence number of the last record, if any.
    pub last_seq: Option<u64>,
    /// File size.
    pub len: u64,
    /// A torn tail found at this offset (and truncated, in [`TailMode::Truncate`]).
    pub torn_at: Option<u64>,
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The snapshot loaded, with its header.
    pub snapshot: Option<(PathBuf, SnapshotHeader)>,
    /// Segments read, in order.
    pub segments: Vec<SegmentSummary>,
    /// Records applied on top of the snapshot.
    pub replayed: u64,
    /// Records skipped because the snapshot has them.
    pub skipped: u64,
    /// Sequence number for the next record.
    pub next_seq: u64,
}

/// Loads the newest snapshot and replays the log into `store` (which must not
/// have a journal attached yet).
///
/// # Errors
/// [`PersistError::Corrupted`] naming file and offset, or I/O errors.
pub fn recover(dir: &Path, store: &Store, now_ms: u64, tail: TailMode) -> Result<RecoveryReport, PersistError> {
    let apply = |item: Item| match item {
        Item::Entry(e) => store.load(&e.key, &e.value, e.expires_at_ms, now_ms),
        Item::Record(record) => store.apply_replayed(record.op, now_ms),
    };
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_APPLIERS);
    let report = if workers == 1 {
        scan(dir, tail, apply)
    } else {
        std::thread::scope(|scope| {
            let mut queues = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(4);
                scope.spawn(move || rx.into_iter().flatten().for_each(apply));
                queues.push((tx, Vec::with_capacity(APPLY_BATCH)));
            }
            let report = scan(dir, tail, |item| {
                let (tx, batch) = &mut queues[store.shard_of(item.key()) % workers];
                batch.push(item);
                if batch.len() == APPLY_BATCH {
                    // A worker that is gone panicked; the scope re-raises that.
                    let _ = tx.send(std::mem::replace(batch, Vec::with_capacity(APPLY_BATCH)));
                }
            });
            for (tx, batch) in queues {
                let _ = tx.send(batch);
            }
            report
        })
    };
    // Also after a failure, so a caller inspecting the store sees what was read.
    store.publish_all();
    report
}

/// Most threads applying recovered changes.
const MAX_APPLIERS: usize = 8;
/// Changes handed to an applying thread at once.
const APPLY_BATCH: usize = 1024;

/// One thing recovery found, in replay order.
#[derive(Debug)]
pub enum Item {
    /// A snapshot entry.
    Entry(SnapshotEntry),
    /// A log record after the snapshot's cut.
    Record(LogRecord),
}

impl Item {
    /// The key it changes.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Entry(e) => &e.key,
            Self::Record(r) => r.op.key(),
        }
    }
}

/// Walks the snapshot and the log in replay order, checking everything.
/// Expired snapshot entries are passed on too (the store drops them).
///
/// # Errors
/// As [`recover`].
pub fn scan(dir: &Path, tail: TailMode, mut sink: impl FnMut(Item)) -> Result<RecoveryReport, PersistError> {
    let listing = list(dir)?;
    let mut report = RecoveryReport::default();
    let mut cut = 0;
    if let Some((_, path)) = listing.snapshots.last() {
        let mut reader = SnapshotReader::open(path)?;
        cut = reader.header().cut_seq;
        while let Some(e) = reader.next_entry()? {
            sink(Item::Entry(e));
        }
        report.snapshot = Some((path.clone(), reader.header().clone()));
    }
    let mut prev: Option<u64> = None;
    let last_index = listing.segments.len().saturating_sub(1);
    for (i, (first_seq, path)) in listing.segments.iter().enumerate() {
        let summary = read_segment(path, *first_seq, i == last_index, tail, |record, offset| {
            let expected = prev.map_or(record.seq, |p| p + 1);
            if record.seq != expected || (prev.is_none() && record.seq > cut + 1) {
                return Err(PersistError::Corrupted {
                    file: path.clone(),
                    offset,
                    reason: format!(
                        "record has seq {} where {} was expected: records are missing",
                        record.seq,
                        if prev.is_none() { cut + 1 } else { expected }
                    ),
                });
            }
            prev = Some(record.seq);
            if record.seq <= cut {
                report.skipped += 1;
            } else {
                report.replayed += 1;
                sink(Item::Record(record));
            }
            Ok(())
        })?;
        report.segments.push(summary);
    }
    report.next_seq = prev.unwrap_or(0).max(cut) + 1;
    Ok(report)
}

fn read_segment(
    path: &Path,
    first_seq: u64,
    is_last: bool,
    tail: TailMode,
    mut on_record: impl FnMut(LogRecord, u64) -> Result<(), PersistError>,
) -> Result<SegmentSummary, PersistError> {
    let io_err = |source| PersistError::Io { file: path.to_path_buf(), source };
    let corrupt = |offset: u64, reason: String| PersistError::Corrupted { file: path.to_path_buf(), offset, reason };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut summary =
        SegmentSummary { path: path.to_path_buf(), first_seq, records: 0, last_seq: None, len, torn_at: None };
    let mut r = BufReader::with_capacity(1 << 20, file);

    let mut header = [0u8; SEGMENT_HEADER_LEN];
    if len < SEGMENT_HEADER_LEN as u64 {
        // A crash while creating the segment: it holds no records.
        if is_last {
            summary.torn_at = Some(0);
            return finish_torn(path, summary, 0, tail);
        }
        return Err(corrupt(0, "segment is shorter than its header".into()));
    }
    r.read_exact(&mut header).map_err(io_err)?;
    if header[..4] != SEGMENT_MAGIC {
        return Err(corrupt(0, "bad magic: not a cryptomem log segment".into()));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != SEGMENT_VERSION {
        return Err(corrupt(4, format!("format version {version}; this build reads {SEGMENT_VERSION}")));
    }
    let header_seq = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    if header_seq != first_seq {
        return Err(corrupt(8, format!("header says first seq {header_seq}, the file name {first_seq}")));
    }

    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut head = [0u8; FRAME_HEADER_LEN];
    while offset < len {
        let remaining = len - offset;
        if remaining < FRAME_HEADER_LEN as u64 {
            return torn_or_corrupt(path, summary, offset, is_last, tail, "file ends inside a record header");
        }
        r.read_exact(&mut head).map_err(io_err)?;
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if size == 0 && is_last && rest_is_zero(&mut r, remaining - FRAME_HEADER_LEN as u64).map_err(io_err)? {
            return torn_or_corrupt(path, summary, offset, true, tail, "zero-filled tail");
        }
        if size == 0 || size > MAX_PAYLOAD {
            return Err(corrupt(offset, format!("record length {size} is impossible")));
        }
        let end = offset + (FRAME_HEADER_LEN + size) as u64;
        if end > len {
            return torn_or_corrupt(path, summary, offset, is_last, tail, "file ends inside a record");
        }
        let mut payload = vec![0u8; size];
        r.read_exact(&mut payload).map_err(io_err)?;
        if crc32fast::hash(&payload) != crc {
            // Only the very last record of the newest segment can be a torn write.
            return torn_or_corrupt(path, summary, offset, is_last && end == len, tail, "record CRC mismatch");
        }
        let record: LogRecord = decode(&payload).map_err(|e| corrupt(offset, format!("undecodable record: {e}")))?;
        summary.records += 1;
        summary.last_seq = Some(record.seq);
        on_record(record, offset)?;
        offset = end;
    }
    Ok(summary)
}

fn rest_is_zero(r: &mut impl Read, mut n: u64) -> io::Result<bool> {
    let mut buf = [0u8; 8192];
    while n > 0 {
        let take = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
        r.read_exact(&mut buf[..take])?;
        if buf[..take].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        n -= take as u64;
    }
    Ok(true)
}

fn torn_or_corrupt(
    path: &Path,
    mut summary: SegmentSummary,
    offset: u64,
    torn: bool,
    tail: TailMode,
    reason: &str,
) -> Result<SegmentSummary, PersistError> {
    if !torn {
        return Err(PersistError::Corrupted { file: path.to_path_buf(), offset, reason: reason.into() });
    }
    summary.torn_at = Some(offset);
    finish_torn(path, summary, offset, tail)
}

fn finish_torn(
    path: &Path,
    summary: SegmentSummary,
    offset: u64,
    tail: TailMode,
) -> Result<SegmentSummary, PersistError> {
    if tail == TailMode::Truncate && offset < SEGMENT_HEADER_LEN as u64 {
        warn!(file = %path.display(), "log segment torn while being created (crash): removing it");
        std::fs::remove_file(path).map_err(|source| PersistError::Io { file: path.to_path_buf(), source })?;
    } else if tail == TailMode::Truncate {
        let cut = summary.len - offset;
        warn!(file = %path.display(), offset, bytes = cut, "torn write at the end of the log (crash mid-write): truncating");
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| PersistError::Io { file: path.to_path_buf(), source })?;
        file.set_len(offset)
            .and_then(|()| file.sync_all())
            .map_err(|source| PersistError::Io { file: path.to_path_buf(), source })?;
    }
    Ok(summary)
}
