//! The append-only log: segment files of checksummed change records.
//!
//! # Segment file `log-<first_seq, 20 digits>.cml`
//!
//! | offset | size | field                                            |
//! |-------:|-----:|--------------------------------------------------|
//! | 0      | 4    | magic `"CMLG"`                                    |
//! | 4      | 4    | format version, big-endian u32, 1                |
//! | 8      | 8    | `first_seq`, big-endian u64: seq of the first record (also in the name) |
//! | 16     | ...  | records: [`super::frame`] frames holding a [`LogRecord`] each |
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
//! If a write or fsync fails, the log stops: later appends fail (the store
//! refuses the write with `IOERR`), and waiters are told. It never retries a
//! failed fsync, whose outcome Linux does not define.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bincode::Encode;
use tokio::sync::watch;
use tracing::error;

use super::files::sync_dir;
use super::frame::{LogOpRef, append_frame};
use crate::store::{Journal, StoreError};

/// Segment magic.
pub const SEGMENT_MAGIC: [u8; 4] = *b"CMLG";
/// Segment format version.
pub const SEGMENT_VERSION: u32 = 1;
/// Segment header length.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// How long the writer thread lets appends accumulate after a write, under
/// `everysec` and `no`.
pub const LINGER: Duration = Duration::from_millis(1);
/// Buffered bytes at which an append wakes a lingering writer thread early.
pub const HIGH_WATER: usize = 1 << 20;

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

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            other => Err(format!("fsync policy `{other}`: use always, everysec or no")),
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

/// What the log has made durable, as waiters see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    /// Every record up to this sequence number is durable per the policy.
    pub durable_seq: u64,
    /// Set once the log has failed; it never clears.
    pub failed: Option<String>,
}

#[derive(Encode)]
struct RecordRef<'a> {
    seq: u64,
    op: LogOpRef<'a>,
}

struct State {
    next_seq: u64,
    buf: Vec<u8>,
    /// A segment switch requested at this buffer offset, starting at this seq.
    rotate_at: Option<(usize, u64)>,
    failed: Option<String>,
    closing: bool,
    /// Records appended since the last snapshot cut.
    since_cut: u64,
    /// Bytes of those records.
    bytes_since_cut: u64,
    /// The writer thread sleeps until an append wakes it.
    flusher_idle: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    status: watch::Sender<LogStatus>,
    policy: FsyncPolicy,
    dir: PathBuf,
}

/// The log writer. Dropping it without [`Log::close`] loses unflushed records.
pub struct Log {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("policy", &self.shared.policy).field("dir", &self.shared.dir).finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    /// Starts a new segment at `next_seq` in `dir` (replacing a same-named file,
    /// which can only hold an empty or torn segment) and the flusher thread.
    ///
    /// # Errors
    /// I/O errors creating the segment.
    pub fn open(dir: &Path, next_seq: u64, policy: FsyncPolicy) -> io::Result<Self> {
        let file = create_segment(dir, next_seq)?;
        let (status, _) = watch::channel(LogStatus { durable_seq: next_seq - 1, failed: None });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq,
                buf: Vec::with_capacity(1 << 20),
                rotate_at: None,
                failed: None,
                closing: false,
                since_cut: 0,
                bytes_since_cut: 0,
                flusher_idle: false,
            }),
            wake: Condvar::new(),
            status,
            policy,
            dir: dir.to_path_buf(),
        });
        let thread_shared = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("cryptomem-log".into())
            .spawn(move || flush_loop(&thread_shared, file, next_seq - 1))?;
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

    /// The current status.
    pub fn status(&self) -> LogStatus {
        self.shared.status.borrow().clone()
    }

    /// Waits until every record up to `seq` is durable.
    ///
    /// # Errors
    /// The failure message if the log failed first.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), String> {
        let mut rx = self.shared.status.subscribe();
        let status = rx
            .wait_for(|s| s.durable_seq >= seq || s.failed.is_some())
            .await
            .map_err(|_| "the log writer has stopped".to_string())?;
        match &status.failed {
            Some(e) if status.durable_seq < seq => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Marks a snapshot cut: returns the last appended sequence number and
    /// starts a new segment with the next record, so segments before it hold
    /// only records the snapshot covers. Call with the store's writers held.
    pub fn cut(&self) -> u64 {
        let mut st = lock(&self.shared.state);
        let cut = st.next_seq - 1;
        st.since_cut = 0;
        st.bytes_since_cut = 0;
        if st.rotate_at.is_none() {
            st.rotate_at = Some((st.buf.len(), st.next_seq));
            self.shared.wake.notify_one();
        }
        cut
    }

    /// Flushes and fsyncs what is buffered, stops the flusher thread, and
    /// refuses later appends.
    pub fn close(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.closing = true;
            self.shared.wake.notify_one();
        }
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
    fn append(&self, op: LogOpRef<'_>) -> Result<u64, StoreError> {
        let mut st = lock(&self.shared.state);
        if let Some(e) = &st.failed {
            return Err(StoreError::Journal(format!("the append-only log failed earlier: {e}")));
        }
        if st.closing {
            return Err(StoreError::Journal("the server is shutting down".into()));
        }
        let seq = st.next_seq;
        let before = st.buf.len();
        append_frame(&mut st.buf, &RecordRef { seq, op }).map_err(StoreError::Journal)?;
        st.next_seq += 1;
        st.since_cut += 1;
        st.bytes_since_cut += (st.buf.len() - before) as u64;
        let crossed_high_water = before < HIGH_WATER && st.buf.len() >= HIGH_WATER;
        if std::mem::take(&mut st.flusher_idle) || crossed_high_water {
            self.shared.wake.notify_one();
        }
        Ok(seq)
    }
}

fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    let path = dir.join(segment_name(first_seq));
    let mut options = OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, super::files::PRIVATE_MODE);
    let mut file = options.open(&path)?;
    file.write_all(&segment_header(first_seq))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Work taken from the buffer in one go.
struct Batch {
    data: Vec<u8>,
    rotate_at: Option<(usize, u64)>,
    last_seq: u64,
    closing: bool,
}

fn flush_loop(shared: &Shared, mut file: File, mut written_seq: u64) {
    let mut spare = Vec::with_capacity(1 << 20);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut wrote_last = false;
    loop {
        let linger = wrote_last && shared.policy != FsyncPolicy::Always;
        let batch = next_batch(shared, &mut spare, unsynced, last_sync, linger);
        let result = write_batch(shared, &mut file, &batch);
        spare = batch.data;
        spare.clear();
        if let Err(e) = result.and_then(|wrote| {
            wrote_last = wrote;
            if wrote {
                written_seq = batch.last_seq;
                unsynced = true;
            }
            let due = match shared.policy {
                FsyncPolicy::Always => unsynced,
                FsyncPolicy::EverySec => unsynced && (batch.closing || last_sync.elapsed() >= Duration::from_secs(1)),
                FsyncPolicy::No => false,
            };
            if due {
                file.sync_data()?;
                last_sync = Instant::now();
                unsynced = false;
            }
            Ok(())
        }) {
            fail(shared, &e);
            return;
        }
        let durable = if unsynced { None } else { Some(written_seq) };
        let durable = match shared.policy {
            // `no` promises only that the OS has the bytes.
            FsyncPolicy::No => Some(written_seq),
            _ => durable,
        };
        if let Some(seq) = durable {
            shared.status.send_if_modified(|s| {
                let changed = s.durable_seq != seq;
                s.durable_seq = seq;
                changed
            });
        }
        if batch.closing {
            return;
        }
    }
}

fn next_batch(shared: &Shared, spare: &mut Vec<u8>, unsynced: bool, last_sync: Instant, linger: bool) -> Batch {
    let mut st = lock(&shared.state);
    let urgent = |st: &State| st.buf.len() >= HIGH_WATER || st.rotate_at.is_some() || st.closing;
    if linger && !urgent(&st) {
        // Not idle: appends made meanwhile do not wake this thread.
        st = shared.wake.wait_timeout(st, LINGER).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
    while st.buf.is_empty() && st.rotate_at.is_none() && !st.closing {
        st.flusher_idle = true;
        if shared.policy == FsyncPolicy::EverySec && unsynced {
            let wait = Duration::from_secs(1).saturating_sub(last_sync.elapsed());
            if wait.is_zero() {
                break;
            }
            st = shared.wake.wait_timeout(st, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        } else {
            st = shared.wake.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
    st.flusher_idle = false;
    let data = std::mem::replace(&mut st.buf, std::mem::take(spare));
    Batch { data, rotate_at: st.rotate_at.take(), last_seq: st.next_seq - 1, closing: st.closing }
}

/// Writes a batch, switching segments at the rotation point. Returns whether
/// any record bytes were written.
fn write_batch(shared: &Shared, file: &mut File, batch: &Batch) -> io::Result<bool> {
    match batch.rotate_at {
        Some((at, first_seq)) => {
            file.write_all(&batch.data[..at])?;
            // The old segment must be complete on disk before anything relies on the new one.
            if shared.policy != FsyncPolicy::No {
                file.sync_data()?;
            }
            *file = create_segment(&shared.dir, first_seq)?;
            file.write_all(&batch.data[at..])?;
        }
        None => file.write_all(&batch.data)?,
    }
    Ok(!batch.data.is_empty())
}

fn fail(shared: &Shared, e: &io::Error) {
    let msg = format!("write to the append-only log in {} failed: {e}", shared.dir.display());
    error!("{msg}; refusing writes from now on (reads keep working)");
    lock(&shared.state).failed = Some(msg.clone());
    shared.status.send_modify(|s| s.failed = Some(msg));
}
