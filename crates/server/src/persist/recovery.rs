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
//!   one thread in file order. Keys are staged per shard and built into
//!   each shard's map at once when the store is published (also on a thread
//!   per core), or earlier when a replayed change needs the shard's keys;
//!   see `Store::load`.
//! - The end of the newest segment may be torn by a crash; see [Torn
//!   tails](#torn-tails). That tail is truncated (with a warning naming file,
//!   offset and bytes) when recovering for the server, and reported when only
//!   checking. Any other damage stops recovery with the file and offset.
//!
//! # Torn tails
//!
//! The log is only ever appended to, so a crash can damage nothing but the
//! end of the newest segment:
//!
//! - a process crash (SIGKILL, panic, OOM kill) keeps every byte the kernel
//!   accepted, so the file ends inside the last record: a partial header or
//!   a partial payload;
//! - a power cut or kernel crash loses or garbles what was written since the
//!   last fsync: the file may end inside a record, or end in zeros or garbage
//!   the filesystem left where the unsynced data should have been.
//!
//! Recovery therefore calls damage at offset `X` a torn tail only when it is
//! in the newest segment **and no intact record follows it**: no offset after
//! `X` holds a record whose header check (format 2), payload CRC and a
//! sequence number above the last good record's all pass. Anything a crash
//! can leave looks like that; a flipped bit in a record with good records
//! after it does not, and is reported as corruption at `X` (so is a bad
//! record in an older segment, which was complete and fsynced before the next
//! one was created). `cryptomem-tool repair` truncates at `X` on request.
//!
//! One case a power cut could produce is also refused: filesystems may write
//! back unsynced pages out of order, leaving a hole before an intact later
//! record. Nothing acknowledged under `always` is in that region; repair
//! truncates at the hole.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::PersistError;
use super::frame::{
    FRAME_HEADER_LEN, FrameHeader, LOG_FRAME_HEADER_LEN, LogRecord, SnapshotEntry, be_u32, be_u64, check_log_header,
    decode,
};
use super::log::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION, parse_segment_name};
use super::snapshot::{SnapshotHeader, SnapshotReader, is_snapshot_temp_name, parse_snapshot_name};
use crate::store::Store;

/// Snapshot and segment files in a data dir, each sorted by sequence number.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// (cut_seq, path).
    pub snapshots: Vec<(u64, PathBuf)>,
    /// (first_seq, path).
    pub segments: Vec<(u64, PathBuf)>,
    /// Temp files of snapshots that were never finished (a crash or kill
    /// while one was written), sorted by name. Nothing reads them; whoever
    /// holds the data dir's lock may delete them ([`remove_leftovers`]).
    pub leftovers: Vec<PathBuf>,
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
        } else if is_snapshot_temp_name(name) {
            listing.leftovers.push(entry.path());
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    listing.leftovers.sort();
    Ok(listing)
}

/// Deletes the unfinished snapshot temp files of `listing`. Only call with
/// the data dir's lock held: then no process is writing them. Returns the
/// bytes freed.
///
/// # Errors
/// I/O errors; files removed before the error stay removed.
pub fn remove_leftovers(dir: &Path, listing: &Listing) -> Result<u64, PersistError> {
    let mut freed = 0;
    for path in &listing.leftovers {
        let io_err = |source| PersistError::Io { file: path.clone(), source };
        freed += std::fs::metadata(path).map_err(io_err)?.len();
        std::fs::remove_file(path).map_err(io_err)?;
    }
    if !listing.leftovers.is_empty() {
        cryptomem_util::files::sync_dir(dir).map_err(|source| PersistError::Io { file: dir.to_path_buf(), source })?;
    }
    Ok(freed)
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
    /// Bytes of those records on disk (frames included): the log written
    /// since the snapshot, which the log-size snapshot rule counts from.
    pub replayed_bytes: u64,
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
    recover_reporting(dir, store, now_ms, tail, &mut |_| {})
}

/// [`recover`], calling `progress` each time another tenth of the snapshot
/// and log bytes has been read.
///
/// # Errors
/// As [`recover`].
pub fn recover_reporting(
    dir: &Path,
    store: &Store,
    now_ms: u64,
    tail: TailMode,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<RecoveryReport, PersistError> {
    let apply = |item: Found| match item {
        Found::Entry(e) => store.load(&e.key, &e.value, e.expires_at_ms, e.version, now_ms),
        Found::Record(record) => store.apply_replayed(record.op.as_change(), record.seq, now_ms),
    };
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_APPLIERS);
    let report = if workers == 1 {
        scan_reporting(dir, tail, apply, progress)
    } else {
        std::thread::scope(|scope| {
            let mut queues = Vec::with_capacity(workers);
            for _ in 0..workers {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Found>>(4);
                scope.spawn(move || rx.into_iter().flatten().for_each(apply));
                queues.push((tx, Vec::with_capacity(APPLY_BATCH)));
            }
            let route = |item: Found| {
                let (tx, batch) = &mut queues[store.shard_of(item.key()) % workers];
                batch.push(item);
                if batch.len() == APPLY_BATCH {
                    // A worker that is gone panicked; the scope re-raises that.
                    let _ = tx.send(std::mem::replace(batch, Vec::with_capacity(APPLY_BATCH)));
                }
            };
            let report = scan_reporting(dir, tail, route, progress);
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

/// Calls a progress callback once per tenth of the bytes.
struct Tenths {
    total_bytes: u64,
    /// The next tenth to report, 1..=10.
    next: u64,
    items: u64,
}

impl Tenths {
    fn passed(&mut self, done_bytes: u64, progress: &mut dyn FnMut(LoadProgress)) {
        self.items += 1;
        if self.next <= 10 && done_bytes.saturating_mul(10) >= self.next.saturating_mul(self.total_bytes) {
            self.next = done_bytes.saturating_mul(10) / self.total_bytes.max(1) + 1;
            progress(LoadProgress { done_bytes, total_bytes: self.total_bytes, items: self.items });
        }
    }
}

/// Most threads applying recovered changes.
const MAX_APPLIERS: usize = 8;
/// Changes handed to an applying thread at once.
const APPLY_BATCH: usize = 1024;

/// One thing recovery found, in replay order.
#[derive(Debug)]
pub enum Found {
    /// A snapshot entry.
    Entry(SnapshotEntry),
    /// A log record after the snapshot's cut.
    Record(LogRecord),
}

impl Found {
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
pub fn scan(dir: &Path, tail: TailMode, sink: impl FnMut(Found)) -> Result<RecoveryReport, PersistError> {
    scan_reporting(dir, tail, sink, &mut |_| {})
}

/// How far loading has got, in bytes of the snapshot and log read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    /// Bytes read so far.
    pub done_bytes: u64,
    /// Bytes of the snapshot and every segment.
    pub total_bytes: u64,
    /// Snapshot entries and log records passed on so far.
    pub items: u64,
}

/// [`scan`], calling `progress` each time another tenth of the bytes is read.
///
/// # Errors
/// As [`recover`].
pub fn scan_reporting(
    dir: &Path,
    tail: TailMode,
    mut sink: impl FnMut(Found),
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<RecoveryReport, PersistError> {
    let listing = list(dir)?;
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let total_bytes = listing.snapshots.last().map_or(0, |(_, p)| size(p))
        + listing.segments.iter().map(|(_, p)| size(p)).sum::<u64>();
    let mut tenths = Tenths { total_bytes, next: 1, items: 0 };
    let mut report = RecoveryReport::default();
    let mut cut = 0;
    if let Some((_, path)) = listing.snapshots.last() {
        let mut reader = SnapshotReader::open(path)?;
        cut = reader.header().cut_seq;
        while let Some(e) = reader.next_entry()? {
            sink(Found::Entry(e));
            tenths.passed(reader.offset(), progress);
        }
        report.snapshot = Some((path.clone(), reader.header().clone()));
    }
    let mut before = listing.snapshots.last().map_or(0, |(_, p)| size(p));
    let mut prev: Option<u64> = None;
    let last_index = listing.segments.len().saturating_sub(1);
    for (i, (first_seq, path)) in listing.segments.iter().enumerate() {
        let summary = read_segment(path, *first_seq, i == last_index, tail, |record, offset, bytes| {
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
                report.replayed_bytes += bytes;
                sink(Found::Record(record));
                tenths.passed(before + offset + bytes, progress);
            }
            Ok(())
        })?;
        before += summary.len;
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
    mut on_record: impl FnMut(LogRecord, u64, u64) -> Result<(), PersistError>,
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
    let format = match check_segment_header(&header, first_seq) {
        Ok(format) => format,
        // The header is synced before the first record is written, so a
        // power cut while creating the newest segment can garble it (the
        // name's directory entry made it, the data did not) but cannot
        // leave records after it.
        Err(_)
            if is_last
                && len <= TORN_CREATION_MAX
                && find_intact_record(
                    path,
                    SEGMENT_HEADER_LEN as u64,
                    len,
                    RecordFormat::V2,
                    first_seq.saturating_sub(1),
                )?
                .is_none() =>
        {
            summary.torn_at = Some(0);
            return finish_torn(path, summary, 0, tail);
        }
        Err((offset, reason)) => return Err(corrupt(offset, reason)),
    };

    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut head = [0u8; LOG_FRAME_HEADER_LEN];
    let head_len = format.header_len();
    while offset < len {
        let damage = |summary: SegmentSummary, reason: &str| {
            let after_seq = summary.last_seq.unwrap_or(first_seq.saturating_sub(1));
            let intact = if is_last { find_intact_record(path, offset + 1, len, format, after_seq)? } else { None };
            match intact {
                None if is_last => torn_or_corrupt(path, summary, offset, true, tail, reason),
                None => Err(corrupt(offset, reason.into())),
                Some(at) => Err(corrupt(
                    offset,
                    format!(
                        "{reason}; an intact record follows at byte offset {at}, \
                         so this is not a write cut short by a crash"
                    ),
                )),
            }
        };
        let remaining = len - offset;
        if remaining < head_len as u64 {
            return damage(summary, "file ends inside a record header");
        }
        r.read_exact(&mut head[..head_len]).map_err(io_err)?;
        let frame = match format.check_header(&head) {
            Ok(h) => h,
            Err(reason) => return damage(summary, reason),
        };
        let size = frame.len;
        let end = offset + (head_len + size) as u64;
        if end > len {
            return damage(summary, "file ends inside a record");
        }
        let mut payload = vec![0u8; size];
        r.read_exact(&mut payload).map_err(io_err)?;
        if !frame.matches(&payload) {
            return damage(summary, "record CRC mismatch");
        }
        let record: LogRecord = decode(&payload).map_err(|e| corrupt(offset, format!("undecodable record: {e}")))?;
        summary.records += 1;
        summary.last_seq = Some(record.seq);
        on_record(record, offset, end - offset)?;
        offset = end;
    }
    Ok(summary)
}

/// How records are framed in a segment, by its format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordFormat {
    /// Version 1: length and payload CRC only (read for upgrades, never written).
    V1,
    /// Version 2: plus a CRC of the header.
    V2,
}

impl RecordFormat {
    fn header_len(self) -> usize {
        match self {
            Self::V1 => FRAME_HEADER_LEN,
            Self::V2 => LOG_FRAME_HEADER_LEN,
        }
    }

    /// Payload length and CRC, once the header is trusted.
    fn check_header(self, head: &[u8; LOG_FRAME_HEADER_LEN]) -> Result<FrameHeader, &'static str> {
        match self {
            Self::V2 => check_log_header(head),
            Self::V1 => head.first_chunk().ok_or("record header is too short").and_then(FrameHeader::parse),
        }
    }
}

/// Fewest bytes a log record's payload takes: seq, op tag and key length.
const MIN_RECORD_PAYLOAD: u64 = 8 + 4 + 8;

/// The offset of the first intact record at or after `from`: header check
/// (format 2), a sequence number above `after_seq` that the remaining bytes
/// could have reached, and a matching payload CRC. Reads the rest of the file
/// in 1 MiB windows; only called once damage was found.
fn find_intact_record(
    path: &Path,
    from: u64,
    file_len: u64,
    format: RecordFormat,
    after_seq: u64,
) -> Result<Option<u64>, PersistError> {
    let io_err = |source| PersistError::Io { file: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    let head_len = format.header_len();
    // A candidate needs its header and the 8-byte seq inside the window.
    let probe = head_len + 8;
    let reachable = after_seq.saturating_add(file_len.saturating_sub(from) / MIN_RECORD_PAYLOAD + 1);
    let mut window = vec![0u8; (1 << 20) + probe];
    let mut pos = from;
    while file_len.saturating_sub(pos) >= probe as u64 {
        let want = usize::try_from((file_len - pos).min(window.len() as u64)).unwrap_or(window.len());
        file.read_exact_at(&mut window[..want], pos).map_err(io_err)?;
        let candidates = want - probe + 1;
        for i in 0..candidates {
            let at = pos + i as u64;
            let mut head = [0u8; LOG_FRAME_HEADER_LEN];
            head[..head_len].copy_from_slice(&window[i..i + head_len]);
            let Ok(FrameHeader { len: size, crc }) = format.check_header(&head) else { continue };
            let payload_at = at + head_len as u64;
            if (size as u64) < MIN_RECORD_PAYLOAD || payload_at + size as u64 > file_len {
                continue;
            }
            let Some(seq) = be_u64(&window, i + head_len) else { continue };
            if seq <= after_seq || seq > reachable {
                continue;
            }
            if crc_of_range(&file, payload_at, size).map_err(io_err)? == crc {
                return Ok(Some(at));
            }
        }
        pos += candidates as u64;
    }
    Ok(None)
}

fn crc_of_range(file: &File, mut at: u64, mut len: usize) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; len.min(1 << 20)];
    while len > 0 {
        let take = len.min(buf.len());
        file.read_exact_at(&mut buf[..take], at)?;
        hasher.update(&buf[..take]);
        at += take as u64;
        len -= take;
    }
    Ok(hasher.finalize())
}

/// Longest newest segment whose damaged header is taken for a power cut
/// while it was being created: the header plus what a filesystem may leave
/// after it (one block of zeros or garbage).
const TORN_CREATION_MAX: u64 = 4096;

/// The segment header's record format, or the offset and reason it is wrong.
fn check_segment_header(header: &[u8; SEGMENT_HEADER_LEN], first_seq: u64) -> Result<RecordFormat, (u64, String)> {
    if header[..4] != SEGMENT_MAGIC {
        return Err((0, "bad magic: not a cryptomem log segment".into()));
    }
    let short = || (0, "segment header is too short".to_string());
    let version = be_u32(header, 4).ok_or_else(short)?;
    let format = match version {
        1 => RecordFormat::V1,
        SEGMENT_VERSION => RecordFormat::V2,
        _ => return Err((4, format!("format version {version}; this build reads 1 and {SEGMENT_VERSION}"))),
    };
    let header_seq = be_u64(header, 8).ok_or_else(short)?;
    if header_seq != first_seq {
        return Err((8, format!("header says first seq {header_seq}, the file name {first_seq}")));
    }
    Ok(format)
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
