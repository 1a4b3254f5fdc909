//! The log's writer thread: takes the buffer in batches, writes, fsyncs per
//! the policy, publishes what is durable, and keeps and retries records a
//! full disk refused (the rules are in [`super::log`]'s `# Failures`).
//!
//! What this thread knows about the current segment is `file_len`, the bytes
//! written whole. A write that fails part way is cut back to it before the
//! next attempt, so a retried batch never leaves half a record behind.

use std::io;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::disk::SegmentFile;
use super::log::{CLOSE_RETRY, FsyncPolicy, HIGH_WATER, LINGER, SEGMENT_HEADER_LEN, Shared, State, lock};

/// First wait before retrying a failed write; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Work taken from the buffer in one go.
struct Batch {
    data: Vec<u8>,
    rotate_at: Option<(usize, u64)>,
    last_seq: u64,
    closing: bool,
}

/// A batch write that failed.
struct WriteFailure {
    /// Bytes at the front of the batch that are written and need no retry.
    consumed: usize,
    /// Whether the batch's segment switch happened.
    rotated: bool,
    /// Whether an fsync failed (never retried) rather than a write.
    sync: bool,
    error: io::Error,
}

impl WriteFailure {
    fn write(consumed: usize, rotated: bool, error: io::Error) -> Self {
        Self { consumed, rotated, sync: false, error }
    }
}

struct Writer<'a> {
    shared: &'a Shared,
    file: Box<dyn SegmentFile>,
    /// Bytes of the current segment written whole.
    file_len: u64,
    /// Bytes of the current segment fsynced.
    synced_len: u64,
    /// The last record written to the OS.
    written_seq: u64,
    unsynced: bool,
    last_sync: Instant,
    wrote_last: bool,
    /// While writes fail: since when, and the next wait.
    failing: Option<(Instant, Duration)>,
}

/// The writer thread's body.
pub(super) fn run(shared: &Shared, file: Box<dyn SegmentFile>, written_seq: u64) {
    let mut w = Writer {
        shared,
        file,
        file_len: SEGMENT_HEADER_LEN as u64,
        synced_len: SEGMENT_HEADER_LEN as u64,
        written_seq,
        unsynced: false,
        last_sync: Instant::now(),
        wrote_last: false,
        failing: None,
    };
    let mut spare = Vec::with_capacity(HIGH_WATER);
    loop {
        let linger = w.wrote_last && shared.policy != FsyncPolicy::Always && w.failing.is_none();
        let batch = next_batch(shared, &mut spare, w.unsynced, w.last_sync, linger, w.failing.map(|f| f.1));
        match w.write_batch(&batch) {
            Ok(()) => {
                if let Some((since, _)) = w.failing.take() {
                    resumed(shared, since, batch.last_seq);
                }
                w.wrote_last = !batch.data.is_empty();
                if w.wrote_last {
                    w.written_seq = batch.last_seq;
                    w.unsynced = true;
                }
                spare = reusable(batch.data);
            }
            Err(f) if f.sync || shared.policy == FsyncPolicy::Always => {
                shared.io.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                fail(shared, &f.error, if f.sync { "fsync" } else { "write" }, w.written_seq);
                w.forget_unacknowledged();
                return;
            }
            Err(f) => {
                shared.io.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let since = w.failing.map_or_else(Instant::now, |(since, _)| since);
                let closing = batch.closing;
                // A shutdown snapshot holding every record makes retrying pointless.
                let covered = closing && lock(&shared.state).snapshot_covers >= batch.last_seq;
                requeue(shared, batch, &f, w.failing.is_none());
                if closing && (covered || since.elapsed() >= CLOSE_RETRY) {
                    // Leave whole records only, and keep what did reach the OS if it can be.
                    if w.file.truncate(w.file_len).and_then(|()| w.file.sync_data()).is_ok() {
                        w.unsynced = false;
                        w.publish_durable();
                    }
                    give_up(shared, &f.error, w.written_seq);
                    return;
                }
                let wait = w.failing.map_or(FIRST_BACKOFF, |(_, wait)| (wait * 2).min(MAX_BACKOFF));
                w.failing = Some((since, wait));
                continue;
            }
        }
        if let Err(e) = w.sync_if_due(batch.closing) {
            shared.io.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fail(shared, &e, "fsync", w.written_seq);
            w.forget_unacknowledged();
            return;
        }
        w.publish_durable();
        if batch.closing {
            return;
        }
    }
}

/// Most capacity each of the two log buffers keeps between batches: a busy
/// writer's batches pass [`HIGH_WATER`] a little, so twice that is never
/// reallocated in normal running.
const BUFFER_KEEP: usize = 2 * HIGH_WATER;

/// Most capacity each of the two log buffers keeps once the writer finds
/// nothing to write. A burst grows them to [`BUFFER_KEEP`] (2 x 2 MiB, 4
/// bytes a key at 1M keys) and an idle server has no use for that; a busy
/// one never finds the buffer empty, and one coming back to work regrows
/// in a few doublings. Redis likewise frees an AOF buffer that grew past
/// 4 KB after each write.
const IDLE_KEEP: usize = 64 << 10;

/// Empties a written buffer for reuse, giving back what it grew beyond
/// [`BUFFER_KEEP`]. While the writer waits on a slow fsync, appends pile up
/// and both buffers double their way to the backlog's size; kept at that
/// peak they held it for the rest of the run (a 30-minute soak went from
/// 37 to 54 MB RSS after one stall and never came back).
fn reusable(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf.shrink_to(BUFFER_KEEP);
    buf
}

impl Writer<'_> {
    /// Writes a batch, switching segments at its rotation point.
    fn write_batch(&mut self, batch: &Batch) -> Result<(), WriteFailure> {
        if self.failing.is_some() {
            // The failed attempt may have left part of a record.
            self.file.truncate(self.file_len).map_err(|e| WriteFailure::write(0, false, e))?;
        }
        let Some((at, first_seq)) = batch.rotate_at else {
            return self.append(&batch.data).map_err(|e| WriteFailure::write(0, false, e));
        };
        self.append(&batch.data[..at]).map_err(|e| WriteFailure::write(0, false, e))?;
        // The old segment must be complete on disk before anything relies on the new one.
        if self.shared.policy != FsyncPolicy::No {
            self.shared.io.timed_sync(|| self.file.sync_data()).map_err(|error| WriteFailure {
                consumed: 0,
                rotated: false,
                sync: true,
                error,
            })?;
        }
        self.written_seq = first_seq - 1;
        self.file = self
            .shared
            .disk
            .create_segment(&self.shared.dir, first_seq)
            .map_err(|e| WriteFailure::write(at, false, e))?;
        self.file_len = SEGMENT_HEADER_LEN as u64;
        self.synced_len = self.file_len;
        self.append(&batch.data[at..]).map_err(|e| WriteFailure::write(at, true, e))
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.append(bytes)?;
        self.file_len += bytes.len() as u64;
        self.shared.io.bytes_written.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn sync_if_due(&mut self, closing: bool) -> io::Result<()> {
        let due = match self.shared.policy {
            FsyncPolicy::Always => self.unsynced,
            FsyncPolicy::EverySec => self.unsynced && (closing || self.last_sync.elapsed() >= Duration::from_secs(1)),
            FsyncPolicy::No => false,
        };
        if due {
            self.shared.io.timed_sync(|| self.file.sync_data())?;
            self.last_sync = Instant::now();
            self.unsynced = false;
            self.synced_len = self.file_len;
        }
        Ok(())
    }

    /// Under `always`, after the failure that stops the log: cuts the segment
    /// back to its last fsynced byte, so records whose writes are answered
    /// `IOERR` are not found by the next start. (Under `everysec` those
    /// records were acknowledged, and whatever of them is on disk stays.)
    fn forget_unacknowledged(&mut self) {
        // A failed append may have left bytes past `file_len`: always cut.
        if self.shared.policy != FsyncPolicy::Always {
            return;
        }
        match self.file.truncate(self.synced_len).and_then(|()| self.file.sync_data()) {
            Ok(()) => info!(bytes = self.synced_len, "cut the log back to its last fsynced record"),
            Err(e) => error!(
                error = %e,
                "cannot cut the log back to its last fsynced record: the next start may find some writes that were answered IOERR"
            ),
        }
    }

    fn publish_durable(&self) {
        // `no` promises only that the OS has the bytes.
        let durable = match self.shared.policy {
            FsyncPolicy::No => Some(self.written_seq),
            _ if self.unsynced => None,
            _ => Some(self.written_seq),
        };
        if let Some(seq) = durable {
            self.shared.status.send_if_modified(|s| {
                let changed = s.durable_seq != seq;
                s.durable_seq = seq;
                changed
            });
        }
    }
}

fn next_batch(
    shared: &Shared,
    spare: &mut Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    linger: bool,
    backoff: Option<Duration>,
) -> Batch {
    let mut st = lock(&shared.state);
    let urgent = |st: &State| st.buf.len() >= HIGH_WATER || st.rotate_at.is_some() || st.closing;
    if let Some(wait) = backoff {
        // Retrying a failed write: wait out the backoff (less when closing,
        // whose retries are bounded by CLOSE_RETRY in total).
        let wait = if st.closing { wait.min(FIRST_BACKOFF) } else { wait };
        st = shared.wake.wait_timeout(st, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    } else if linger && !urgent(&st) {
        // Not idle: appends made meanwhile do not wake this thread.
        st = shared.wake.wait_timeout(st, LINGER).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
    while backoff.is_none() && st.buf.is_empty() && st.rotate_at.is_none() && !st.closing {
        st.flusher_idle = true;
        // Both are empty here, so shrinking copies nothing.
        st.buf.shrink_to(IDLE_KEEP);
        spare.shrink_to(IDLE_KEEP);
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
    shared.backlog.release();
    Batch { data, rotate_at: st.rotate_at.take(), last_seq: st.next_seq - 1, closing: st.closing }
}

/// Puts what a failed write did not write back in front of the buffer and
/// refuses appends until a retry succeeds. The first failure of a run is logged.
fn requeue(shared: &Shared, batch: Batch, failure: &WriteFailure, first: bool) {
    let mut kept = batch.data;
    kept.drain(..failure.consumed);
    let mut st = lock(&shared.state);
    let shift = kept.len();
    kept.extend_from_slice(&st.buf);
    st.buf = kept;
    st.rotate_at = match batch.rotate_at {
        // A switch not yet made stays first; one requested meanwhile is
        // dropped (the snapshot that asked for it covers the records anyway).
        Some((at, seq)) if !failure.rotated => Some((at - failure.consumed, seq)),
        _ => st.rotate_at.map(|(at, seq)| (at + shift, seq)),
    };
    let message = format!(
        "the append-only log in {} cannot be written ({}); retrying, and refusing writes until it succeeds",
        shared.dir.display(),
        failure.error
    );
    if first {
        error!(
            error = %failure.error,
            kept_bytes = st.buf.len(),
            "writing the append-only log failed; its records are kept in memory and retried, writes are refused meanwhile"
        );
    }
    st.stalled = Some(message.clone());
    drop(st);
    // Waiting writers go on and are refused with the message.
    shared.backlog.release();
    shared.status.send_modify(|s| s.stalled = Some(message));
}

fn resumed(shared: &Shared, since: Instant, last_seq: u64) {
    lock(&shared.state).stalled = None;
    shared.status.send_modify(|s| s.stalled = None);
    info!(
        after_ms = since.elapsed().as_millis() as u64,
        written_up_to_seq = last_seq,
        "the append-only log can be written again: every kept record is written, writes are accepted"
    );
}

/// The log stops for good after a failed fsync, or any failure under `always`.
fn fail(shared: &Shared, e: &io::Error, what: &str, written_seq: u64) {
    let durable = shared.status.borrow().durable_seq;
    let st = lock(&shared.state);
    let last = st.next_seq - 1;
    let msg = format!("{what} of the append-only log in {} failed: {e}", shared.dir.display());
    let at_risk = if last > durable {
        format!("records {}..={last} may not be on disk", durable + 1)
    } else {
        "every record is on disk".to_string()
    };
    if shared.policy == FsyncPolicy::Always {
        error!(written_up_to_seq = written_seq, "{msg}; {at_risk}; fsync=always: the server stops");
    } else {
        error!(
            written_up_to_seq = written_seq,
            "{msg}; {at_risk}; refusing writes until restart (reads keep working; the shutdown snapshot will try to keep them)"
        );
    }
    drop(st);
    mark_failed(shared, msg);
}

/// Closing with writes still failing: say exactly what never reached the log.
fn give_up(shared: &Shared, e: &io::Error, written_seq: u64) {
    let st = lock(&shared.state);
    let last = st.next_seq - 1;
    let covered = st.snapshot_covers;
    drop(st);
    if covered >= last {
        info!(
            "records {}..={last} never reached the append-only log ({e}), but the snapshot at seq {covered} holds them: nothing is lost",
            written_seq + 1
        );
    } else {
        let first_lost = (written_seq + 1).max(covered + 1);
        error!(
            "shutting down with records {first_lost}..={last} not on disk: the append-only log could not be written for {} s ({e}); they will be missing after restart",
            CLOSE_RETRY.as_secs()
        );
    }
    mark_failed(shared, format!("write of the append-only log in {} failed: {e}", shared.dir.display()));
}

/// Stops the log for good: appends are refused with `msg`, waiters told.
fn mark_failed(shared: &Shared, msg: String) {
    let mut st = lock(&shared.state);
    st.failed = Some(msg.clone());
    st.stalled = None;
    drop(st);
    shared.backlog.release();
    shared.status.send_modify(|s| {
        s.failed = Some(msg);
        s.stalled = None;
    });
}

#[cfg(test)]
mod tests;
