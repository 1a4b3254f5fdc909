//! The append-only log: segment files of checksummed change records.
//!
//! # Segment file `log-<first_seq, 20 digits>.cml`
//!
//! | offset | size | field                                            |
//! |-------:|-----:|--------------------------------------------------|
//! | 0      | 4    | magic `"CMLG"`                                    |
//! | 4      | 4    | format version, big-endian u32: 2 (1 is still read) |
//! | 8      | 8    | `first_seq`, big-endian u64: seq of the first record (also in the name) |
//! | 16     | ...  | records: [`super::frame`] log record frames holding a [`super::frame::LogRecord`] each |
//!
//! Version 2 frames carry a CRC of their own header (length and payload
//! CRC), so a damaged length is detected instead of looking like a record cut
//! short by a crash; version 1 segments (written by 0.1 servers before this
//! change) have 8-byte frame headers without it and are read for upgrades.
//! How damage is told from a torn tail: [`super::recovery`].
//!
//! Sequence numbers are global, start at 1 and increase by exactly one from
//! record to record, across segments.
//!
//! # Writing
//!
//! [`Log::append`] encodes the record into an in-memory buffer under one
//! mutex, which also hands out sequence numbers, so buffer order is sequence
//! order. A dedicated thread takes the whole buffer at once, writes it with
//! one `write`, and depending on the [`FsyncPolicy`]:
//!
//! - `always`: `fdatasync`s every batch before publishing it as durable; the
//!   server holds a write's reply until then. Every client whose records were
//!   in the batch shares that one fsync (group commit).
//! - `everysec`: `fdatasync`s at most once a second; replies do not wait.
//! - `no`: never fsyncs; the OS writes back when it likes.
//!
//! An append wakes the writer thread only when that thread is asleep on an
//! empty buffer: waking it costs a futex call and a context switch, which
//! per append was a tenth of a busy server's CPU. Under `everysec` and `no`
//! the thread also waits [`LINGER`] after each write before taking the next
//! batch, so a busy server writes a few hundred times a second and its
//! appenders never wake anyone (unless the buffer passes [`HIGH_WATER`]).
//! Records therefore reach the OS within about a millisecond; `always` does
//! not linger, its waiters are woken as soon as the fsync returns.
//!
//! # Backpressure
//!
//! A disk slower than the writes (a stalled or throttled device, a long
//! fsync under `everysec`) would let the buffer grow without bound. Once it
//! holds [`BACKLOG_LIMIT`] bytes the log is *backlogged*: the server makes
//! each connection's next write wait in [`Log::wait_for_room`] (reads go on)
//! until the writer thread takes the buffer. Nothing is refused or dropped:
//! writers slow to the disk's pace. Appends themselves never block, since
//! they run under a shard's write lock.
//!
//! # Failures
//!
//! - A failed **write** (a full disk: `ENOSPC`, `EDQUOT`) under `everysec`
//!   or `no`: the records are kept in memory, the segment is cut back to its
//!   last whole record, and the writer retries with backoff (100 ms doubling
//!   to 5 s). Meanwhile appends are refused (`IOERR`; one warning per 10 s
//!   counts them). When a retry succeeds, every kept record is written, in
//!   order, and writes are accepted again. At shutdown the writer retries
//!   for [`CLOSE_RETRY`] and then logs exactly which sequence numbers never
//!   reached the log (and whether the final snapshot holds them).
//! - A failed **fsync** under `everysec`: Linux does not define what is on
//!   disk afterwards, so it is never retried. The log stops for good: appends
//!   are refused until restart, the error names the records that may not be
//!   on disk, and the shutdown snapshot (a new file, fsynced on its own) is
//!   still attempted, so a disk that works again keeps them.
//! - **Any** failure under `always` is fatal, as in Redis: the records
//!   waiting in that batch are not durable, the log stops, waiters are told
//!   (their clients get `IOERR`), and the server shuts down without a
//!   snapshot, so no client can read a write that the next start would not
//!   have. The writer thread itself is [`super::log_writer`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bincode::Encode;
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::disk::{Disk, OsDisk};
use super::frame::{LogOpRef, append_log_frame};
use crate::store::{Change, Journal, StoreError};

/// Segment magic.
pub const SEGMENT_MAGIC: [u8; 4] = *b"CMLG";
/// Segment format version.
pub const SEGMENT_VERSION: u32 = 2;
/// Segment header length.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// How long the writer thread lets appends accumulate after a write, under
/// `everysec` and `no`.
pub const LINGER: Duration = Duration::from_millis(1);
/// Buffered bytes at which an append wakes a lingering writer thread early.
pub const HIGH_WATER: usize = 1 << 20;
/// Buffered bytes at which writers wait for the writer thread
/// ([`Log::wait_for_room`]): the most a disk slower than the writes can make
/// the append buffer hold (plus the batch being written, and the writes
/// already executing when the mark was passed).
pub const BACKLOG_LIMIT: usize = if cfg!(test) { 64 << 10 } else { 16 << 20 };
/// How long a closing log keeps retrying a write that fails (a full disk)
/// before it gives up and names the records that never reached the disk.
pub const CLOSE_RETRY: Duration = if cfg!(test) { Duration::from_millis(300) } else { Duration::from_secs(10) };
/// At most one warning about refused appends per this interval.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// When the log fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before every reply to a write.
    Always,
    /// Once a second.
    #[default]
    EverySec,
    /// Never (the OS decides).
    No,
}

/// An fsync policy name other than `always`, `everysec` or `no`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fsync policy `{0}`: use always, everysec or no")]
pub struct UnknownFsyncPolicy(pub String);

impl std::str::FromStr for FsyncPolicy {
    type Err = UnknownFsyncPolicy;
    fn from_str(s: &str) -> Result<Self, UnknownFsyncPolicy> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            other => Err(UnknownFsyncPolicy(other.to_string())),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::No => "no",
        })
    }
}

/// The file name of the segment starting at `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("log-{first_seq:020}.cml")
}

/// The first sequence number in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?.strip_suffix(".cml")?.parse().ok()
}

/// The 16-byte segment header.
pub fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    h[8..].copy_from_slice(&first_seq.to_be_bytes());
    h
}

/// Why the log refused a record or could not make it durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The log failed for good (an fsync failed, or any write failed under
    /// `always`): what failed, with the file and the OS error.
    #[error("{0}")]
    Failed(String),
    /// Writes fail and are being retried (a full disk): the last failure.
    #[error("{0}")]
    Stalled(String),
    /// The log is closing: the server is shutting down.
    #[error("the server is shutting down")]
    Closing,
    /// The writer thread is gone without recording a failure.
    #[error("the log writer has stopped")]
    Stopped,
    /// The record cannot be encoded (larger than a frame may be).
    #[error("the record cannot be logged: {0}")]
    Unencodable(String),
}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        StoreError::Journal(Arc::new(e))
    }
}

/// What the log has made durable, as waiters see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    /// Every record up to this sequence number is durable per the policy.
    pub durable_seq: u64,
    /// Set once the log has failed for good; it never clears.
    pub failed: Option<String>,
    /// Set while writes fail and are retried (a full disk); clears when a
    /// retry succeeds.
    pub stalled: Option<String>,
}

#[derive(Encode)]
struct RecordRef<'a> {
    seq: u64,
    op: LogOpRef<'a>,
}

pub(super) struct State {
    pub(super) next_seq: u64,
    pub(super) buf: Vec<u8>,
    /// A segment switch requested at this buffer offset, starting at this seq.
    pub(super) rotate_at: Option<(usize, u64)>,
    pub(super) failed: Option<String>,
    /// Why appends are refused while the writer retries.
    pub(super) stalled: Option<String>,
    pub(super) closing: bool,
    /// Records appended since the last snapshot cut.
    since_cut: u64,
    /// Bytes of those records.
    bytes_since_cut: u64,
    /// The writer thread sleeps until an append wakes it.
    pub(super) flusher_idle: bool,
    refusals: RefusalWarnings,
    /// The cut of the newest snapshot written while this log ran: records up
    /// to it are durable even if the log never wrote them.
    pub(super) snapshot_covers: u64,
}

/// Counts refused appends so that a flood of them logs one warning per
/// [`REFUSAL_WARN_EVERY`] (243 lines while filling a disk, before).
#[derive(Debug, Default)]
struct RefusalWarnings {
    /// Refused since the last warning.
    refused: u64,
    warned_at: Option<Instant>,
}

impl RefusalWarnings {
    /// Counts one refusal at `now`; returns how many to report if a warning is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.refused += 1;
        let due = self.warned_at.is_none_or(|at| now.duration_since(at) >= REFUSAL_WARN_EVERY);
        if !due {
            return None;
        }
        self.warned_at = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) wake: Condvar,
    pub(super) status: watch::Sender<LogStatus>,
    pub(super) policy: FsyncPolicy,
    pub(super) dir: PathBuf,
    pub(super) disk: Arc<dyn Disk>,
    pub(super) backlog: Backlog,
    pub(super) io: LogIo,
}

/// What the writer thread did, for metrics.
#[derive(Default)]
pub(super) struct LogIo {
    /// Bytes appended to segments (failed attempts excluded).
    pub(super) bytes_written: AtomicU64,
    /// Failed writes and fsyncs, each retry counted.
    pub(super) failures: AtomicU64,
    /// Where fsync durations go, once someone watches them.
    pub(super) fsync_seconds: std::sync::OnceLock<metrics::Histogram>,
}

impl LogIo {
    /// `sync_data`, timed when someone watches.
    pub(super) fn timed_sync(&self, sync: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        let result = sync();
        if let Some(h) = self.fsync_seconds.get() {
            h.record(started.elapsed());
        }
        result
    }
}

/// Whether writers must wait for the writer thread, and their wake-up.
#[derive(Default)]
pub(super) struct Backlog {
    full: AtomicBool,
    room: Notify,
    /// Times a write waited.
    waits: AtomicU64,
}

impl Backlog {
    /// Marks the buffer backlogged (from an append, under the state lock).
    fn fill(&self) {
        self.full.store(true, Ordering::Release);
    }

    /// Lets waiting writers go: the writer thread took the buffer, or the
    /// log stopped or closed (their writes then get its refusal).
    pub(super) fn release(&self) {
        if self.full.swap(false, Ordering::AcqRel) {
            self.room.notify_waiters();
        }
    }
}

/// The log writer. Dropping it without [`Log::close`] loses unflushed records.
pub struct Log {
    pub(super) shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("policy", &self.shared.policy).field("dir", &self.shared.dir).finish()
    }
}

pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    /// Starts a new segment at `next_seq` in `dir` (replacing a same-named file,
    /// which can only hold an empty or torn segment) and the flusher thread.
    /// `since_cut` is the records and bytes already on disk after the last
    /// snapshot's cut (from recovery), so the snapshot rules count them.
    ///
    /// # Errors
    /// I/O errors creating the segment.
    pub fn open(dir: &Path, next_seq: u64, since_cut: (u64, u64), policy: FsyncPolicy) -> io::Result<Self> {
        Self::open_on(Arc::new(OsDisk), dir, next_seq, since_cut, policy)
    }

    /// [`Log::open`] on another [`Disk`] (fault-injection tests).
    ///
    /// # Errors
    /// I/O errors creating the segment.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        next_seq: u64,
        since_cut: (u64, u64),
        policy: FsyncPolicy,
    ) -> io::Result<Self> {
        let file = disk.create_segment(dir, next_seq)?;
        let (status, _) = watch::channel(LogStatus { durable_seq: next_seq - 1, failed: None, stalled: None });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq,
                buf: Vec::with_capacity(1 << 20),
                rotate_at: None,
                failed: None,
                stalled: None,
                closing: false,
                since_cut: since_cut.0,
                bytes_since_cut: since_cut.1,
                flusher_idle: false,
                refusals: RefusalWarnings::default(),
                snapshot_covers: 0,
            }),
            wake: Condvar::new(),
            status,
            policy,
            dir: dir.to_path_buf(),
            disk,
            backlog: Backlog::default(),
            io: LogIo::default(),
        });
        let thread_shared = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("cryptomem-log".into())
            .spawn(move || super::log_writer::run(&thread_shared, file, next_seq - 1))?;
        Ok(Self { shared, flusher: Mutex::new(Some(flusher)) })
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.shared.policy
    }

    /// The sequence number of the last appended record (0 if none ever).
    pub fn last_seq(&self) -> u64 {
        lock(&self.shared.state).next_seq - 1
    }

    /// Records appended since the last [`Log::cut`], and their bytes.
    pub fn since_cut(&self) -> (u64, u64) {
        let st = lock(&self.shared.state);
        (st.since_cut, st.bytes_since_cut)
    }

    /// Bytes appended to log segments since the log opened.
    pub fn bytes_written(&self) -> u64 {
        self.shared.io.bytes_written.load(Ordering::Relaxed)
    }

    /// Failed segment writes and fsyncs since the log opened (each retry counted).
    pub fn failures(&self) -> u64 {
        self.shared.io.failures.load(Ordering::Relaxed)
    }

    /// Records every fsync's duration in `histogram` from now on (the first call wins).
    pub fn time_fsyncs(&self, histogram: metrics::Histogram) {
        let _ = self.shared.io.fsync_seconds.set(histogram);
    }

    /// Bytes the append buffer holds (records not yet handed to the writer
    /// thread, and the buffer's spare capacity).
    pub fn buffered_bytes(&self) -> u64 {
        lock(&self.shared.state).buf.capacity() as u64
    }

    /// Waits while the buffer is backlogged (it holds [`BACKLOG_LIMIT`]
    /// bytes the disk has not taken yet); immediate otherwise. Call before a
    /// write, never while holding a lock the writer thread needs.
    pub async fn wait_for_room(&self) {
        let backlog = &self.shared.backlog;
        if !backlog.full.load(Ordering::Acquire) {
            return;
        }
        backlog.waits.fetch_add(1, Ordering::Relaxed);
        loop {
            let room = backlog.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a release in between is not missed.
            room.as_mut().enable();
            if !backlog.full.load(Ordering::Acquire) {
                return;
            }
            room.await;
        }
    }

    /// Whether writers wait for the disk now.
    pub fn backlogged(&self) -> bool {
        self.shared.backlog.full.load(Ordering::Acquire)
    }

    /// How many times a write has waited in [`Log::wait_for_room`].
    pub fn backlog_waits(&self) -> u64 {
        self.shared.backlog.waits.load(Ordering::Relaxed)
    }

    /// The current status.
    pub fn status(&self) -> LogStatus {
        self.shared.status.borrow().clone()
    }

    /// Waits until every record up to `seq` is durable.
    ///
    /// # Errors
    /// [`LogError::Failed`] if the log failed first.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), LogError> {
        let mut rx = self.shared.status.subscribe();
        let status =
            rx.wait_for(|s| s.durable_seq >= seq || s.failed.is_some()).await.map_err(|_| LogError::Stopped)?;
        match &status.failed {
            Some(e) if status.durable_seq < seq => Err(LogError::Failed(e.clone())),
            _ => Ok(()),
        }
    }

    /// Resolves once the log has failed for good, with the error; `None` if
    /// the writer thread is gone without a failure (closed).
    pub async fn wait_failed(&self) -> Option<String> {
        let mut rx = self.shared.status.subscribe();
        rx.wait_for(|s| s.failed.is_some()).await.ok().and_then(|s| s.failed.clone())
    }

    /// Marks a snapshot cut: returns the last appended sequence number and
    /// starts a new segment with the next record, so segments before it hold
    /// only records the snapshot covers. Call with the store's writers held.
    /// A log that cannot write keeps its segment: the snapshot covers every
    /// record it holds, and the newest segment is never deleted.
    pub fn cut(&self) -> u64 {
        let mut st = lock(&self.shared.state);
        let cut = st.next_seq - 1;
        st.since_cut = 0;
        st.bytes_since_cut = 0;
        if st.rotate_at.is_none() && st.failed.is_none() && st.stalled.is_none() {
            st.rotate_at = Some((st.buf.len(), st.next_seq));
            self.shared.wake.notify_one();
        }
        cut
    }

    /// Records that a snapshot with cut `seq` is durable: the records up to it
    /// are safe even if this log cannot write them.
    pub fn snapshot_written(&self, seq: u64) {
        let mut st = lock(&self.shared.state);
        st.snapshot_covers = st.snapshot_covers.max(seq);
    }

    /// Why appends are refused now, if they are.
    pub fn refusal(&self) -> Option<String> {
        let st = lock(&self.shared.state);
        st.failed.clone().or_else(|| st.stalled.clone())
    }

    /// The sequence numbers appended but not durable, if any: after a
    /// failure, what the next start would not find (unless a snapshot has it).
    pub fn not_durable(&self) -> Option<std::ops::RangeInclusive<u64>> {
        let st = lock(&self.shared.state);
        let durable = self.shared.status.borrow().durable_seq.max(st.snapshot_covers);
        let last = st.next_seq - 1;
        (durable < last).then(|| durable + 1..=last)
    }

    /// Flushes and fsyncs what is buffered, stops the flusher thread, and
    /// refuses later appends. A log whose writes fail retries for
    /// [`CLOSE_RETRY`] first.
    pub fn close(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.closing = true;
            self.shared.wake.notify_one();
        }
        self.shared.backlog.release();
        let handle = self.flusher.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

impl Journal for Log {
    fn append(&self, change: Change<'_>) -> Result<u64, StoreError> {
        let op = LogOpRef(change);
        let mut st = lock(&self.shared.state);
        let refusal = (st.failed.clone().map(LogError::Failed)).or_else(|| st.stalled.clone().map(LogError::Stalled));
        if let Some(refusal) = refusal {
            if let Some(refused) = st.refusals.note(Instant::now()) {
                warn!(refused, "refusing writes: {refusal}");
            }
            return Err(refusal.into());
        }
        if st.closing {
            return Err(LogError::Closing.into());
        }
        let seq = st.next_seq;
        let before = st.buf.len();
        append_log_frame(&mut st.buf, &RecordRef { seq, op }).map_err(|e| LogError::Unencodable(e.to_string()))?;
        st.next_seq += 1;
        st.since_cut += 1;
        st.bytes_since_cut += (st.buf.len() - before) as u64;
        let crossed_high_water = before < HIGH_WATER && st.buf.len() >= HIGH_WATER;
        if st.buf.len() >= BACKLOG_LIMIT {
            self.shared.backlog.fill();
        }
        if std::mem::take(&mut st.flusher_idle) || crossed_high_water {
            self.shared.wake.notify_one();
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_appends_warn_once_per_interval_with_a_count() {
        let mut warnings = RefusalWarnings::default();
        let start = Instant::now();
        assert_eq!(warnings.note(start), Some(1), "the first refusal is reported at once");
        let mut reported = Vec::new();
        // 300 refusals over 25 s: one warning at 10 s and one at 20 s.
        for i in 1..=300u64 {
            let now = start + Duration::from_millis(i * 25_000 / 300);
            reported.extend(warnings.note(now));
        }
        assert_eq!(reported, vec![120, 120]);
        assert_eq!(warnings.refused, 60, "the rest wait for the next warning");
    }
}
