//! The running persistence: recovery at open, the log as the store's journal,
//! scheduled snapshots, and the numbers INFO shows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::PersistError;
use super::disk::{Disk, OsDisk};
use super::log::{FsyncPolicy, Log};
use super::recovery::{RecoveryReport, TailMode, list, remove_leftovers};
use super::snapshot::{SnapshotHeader, write_snapshot};
use crate::store::{Clock, Store};

/// Persistence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistConfig {
    /// When the log fsyncs.
    pub fsync: FsyncPolicy,
    /// Snapshot at least this often (if anything changed).
    pub snapshot_interval: Duration,
    /// Snapshot once the log bytes written since the last snapshot reach
    /// this and [`PersistConfig::snapshot_log_percentage`] of its size.
    pub snapshot_log_min_bytes: u64,
    /// Percent of the last snapshot's size the log must grow by; 0 disables
    /// the log-size rule.
    pub snapshot_log_percentage: u64,
    /// Snapshot after this many changes; 0 disables.
    pub snapshot_after_writes: u64,
}

impl Default for PersistConfig {
    /// Snapshots when the log has grown by as much as the last snapshot (and
    /// at least 64 MiB), like Redis's AOF rewrite: replay work and disk use
    /// stay proportional to the data, and a busy server does not rewrite its
    /// whole keyspace every few hundred thousand writes.
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::EverySec,
            snapshot_interval: Duration::from_secs(300),
            snapshot_log_min_bytes: 64 << 20,
            snapshot_log_percentage: 100,
            snapshot_after_writes: 0,
        }
    }
}

impl PersistConfig {
    /// Whether the log-size rule calls for a snapshot.
    pub fn log_outgrew_snapshot(&self, log_bytes: u64, last_snapshot_bytes: u64) -> bool {
        self.snapshot_log_percentage > 0
            && log_bytes
                >= self
                    .snapshot_log_min_bytes
                    .max(last_snapshot_bytes.saturating_mul(self.snapshot_log_percentage) / 100)
    }
}

#[derive(Debug, Clone, Default)]
struct Stats {
    last_snapshot_unix_ms: Option<u64>,
    last_snapshot_duration: Option<Duration>,
    last_snapshot_keys: u64,
    last_snapshot_bytes: u64,
    snapshots: u64,
    snapshot_failures: u64,
    last_error: Option<String>,
}

/// Snapshot figures for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotFigures {
    /// Snapshots written since start.
    pub taken: u64,
    /// Snapshots that failed since start.
    pub failed: u64,
    /// When the newest one was written (unix ms), if any since start.
    pub last_unix_ms: Option<u64>,
    /// How long the newest one took.
    pub last_duration: Option<Duration>,
}

/// Persistence for one data dir. Share it behind an `Arc`.
pub struct Persistence {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    store: Arc<Store>,
    log: Arc<Log>,
    clock: Clock,
    config: PersistConfig,
    snapshotting: tokio::sync::Mutex<()>,
    stats: Mutex<Stats>,
    /// When the last snapshot (scheduled, SAVE or at open) finished; the interval counts from here.
    last_snapshot: Mutex<Instant>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence").field("dir", &self.dir).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Persistence {
    /// Recovers `dir` into `store` (which must be empty, without a journal),
    /// starts a new log segment and makes the log the store's journal.
    ///
    /// # Errors
    /// [`PersistError`]: corruption (with file and offset) stops startup.
    pub fn open(
        dir: &Path,
        store: Store,
        clock: Clock,
        config: PersistConfig,
    ) -> Result<(Arc<Self>, RecoveryReport), PersistError> {
        Self::open_on(Arc::new(OsDisk), dir, store, clock, config)
    }

    /// [`Persistence::open`] with the log on `disk` (fault-injection tests).
    ///
    /// # Errors
    /// As [`Persistence::open`].
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        store: Store,
        clock: Clock,
        config: PersistConfig,
    ) -> Result<(Arc<Self>, RecoveryReport), PersistError> {
        Self::open_reporting(disk, dir, store, clock, config, &mut |_| {})
    }

    /// [`Persistence::open_on`], calling `progress` at each tenth of the
    /// snapshot and log read while loading.
    ///
    /// # Errors
    /// As [`Persistence::open`].
    pub fn open_reporting(
        disk: Arc<dyn Disk>,
        dir: &Path,
        store: Store,
        clock: Clock,
        config: PersistConfig,
        progress: &mut dyn FnMut(super::LoadProgress),
    ) -> Result<(Arc<Self>, RecoveryReport), PersistError> {
        let report = super::recover_reporting(dir, &store, clock.now_ms(), TailMode::Truncate, progress)?;
        remove_snapshot_leftovers(dir);
        let since_cut = (report.replayed, report.replayed_bytes);
        // Every start begins a new segment, so a full disk is found here.
        let segment = dir.join(super::log::segment_name(report.next_seq));
        let log = Log::open_on(Arc::clone(&disk), dir, report.next_seq, since_cut, config.fsync)
            .map_err(|source| PersistError::Io { file: segment, source })?;
        let log = Arc::new(log);
        let store = Arc::new(store.with_journal(Arc::clone(&log) as Arc<dyn crate::store::Journal>));
        let stats = Stats {
            last_snapshot_unix_ms: report.snapshot.as_ref().map(|(_, h)| h.created_unix_ms),
            last_snapshot_keys: report.snapshot.as_ref().map_or(0, |(_, h)| h.entries),
            last_snapshot_bytes: report
                .snapshot
                .as_ref()
                .map_or(0, |(p, _)| std::fs::metadata(p).map_or(0, |m| m.len())),
            ..Stats::default()
        };
        let engine = Self {
            disk,
            dir: dir.to_path_buf(),
            store,
            log,
            clock,
            config,
            snapshotting: tokio::sync::Mutex::new(()),
            stats: Mutex::new(stats),
            last_snapshot: Mutex::new(Instant::now()),
        };
        Ok((Arc::new(engine), report))
    }

    /// The store, journaling to this log.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn last_snapshot_at(&self) -> Instant {
        *self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Snapshot counts and the newest snapshot's time and duration.
    pub fn snapshot_figures(&self) -> SnapshotFigures {
        let stats = self.stats();
        SnapshotFigures {
            taken: stats.snapshots,
            failed: stats.snapshot_failures,
            last_unix_ms: stats.last_snapshot_unix_ms,
            last_duration: stats.last_snapshot_duration,
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a snapshot now (one at a time) and removes what it supersedes.
    /// Writers keep going while it is written.
    ///
    /// # Errors
    /// [`PersistError`] if writing fails; the previous snapshot and all
    /// segments stay, so nothing is lost.
    pub async fn snapshot(&self) -> Result<SnapshotHeader, PersistError> {
        let _one_at_a_time = self.snapshotting.lock().await;
        let started = Instant::now();
        let cut = self.store.cut(|| self.log.cut());
        let dir = self.dir.clone();
        let disk = Arc::clone(&self.disk);
        let now = self.clock.now_ms();
        // Writing and the deletions after it (unlinking a large file takes
        // the kernel a while) stay off the threads serving requests.
        let written = super::background::run("cryptomem-snapshot", move || {
            let written =
                write_snapshot(disk.as_ref(), &dir, cut, now, |n| info!(entries = n, "snapshot in progress"))?;
            if let Err(e) = remove_superseded(disk.as_ref(), &dir, written.1.cut_seq, Superseded::ClosedSegments) {
                warn!(error = %e, "could not remove files the new snapshot supersedes; they will be retried next time");
            }
            Ok(written)
        })
        .await
        .unwrap_or_else(|e| Err(PersistError::Io { file: self.dir.clone(), source: std::io::Error::other(e) }));
        let (path, header) = match written {
            Ok(w) => w,
            Err(e) => {
                // Say what the log really holds: it may be failing too (a full disk).
                match (self.log.refusal(), self.log.not_durable()) {
                    (None, _) => warn!(error = %e, "snapshot failed; the log has every change"),
                    (Some(why), Some(range)) => warn!(
                        error = %e,
                        "snapshot failed, and the log cannot write either ({why}): records {}..={} are not on disk",
                        range.start(),
                        range.end()
                    ),
                    (Some(why), None) => {
                        warn!(error = %e, "snapshot failed; the log cannot take new writes ({why}) but has every change so far");
                    }
                }
                let mut stats = self.stats();
                stats.last_error = Some(e.to_string());
                stats.snapshot_failures += 1;
                return Err(e);
            }
        };
        self.log.snapshot_written(header.cut_seq);
        let took = started.elapsed();
        info!(file = %path.display(), keys = header.entries, cut_seq = header.cut_seq, ms = took.as_millis() as u64, "snapshot written");
        *self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        let mut stats = self.stats();
        stats.last_snapshot_unix_ms = Some(header.created_unix_ms);
        stats.last_snapshot_duration = Some(took);
        stats.last_snapshot_keys = header.entries;
        stats.last_snapshot_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        stats.snapshots += 1;
        Ok(header)
    }

    /// Snapshots on the interval, when the log outgrows the last snapshot, and
    /// after `snapshot_after_writes` changes, until `stop` flips.
    pub fn spawn_scheduler(self: &Arc<Self>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(crate::periodic::every(Duration::from_millis(500), stop, move || {
            let this = Arc::clone(&this);
            async move {
                let (changes, log_bytes) = this.log.since_cut();
                let by_count = this.config.snapshot_after_writes > 0 && changes >= this.config.snapshot_after_writes;
                let by_size = this.config.log_outgrew_snapshot(log_bytes, this.stats().last_snapshot_bytes);
                let by_time = changes > 0 && this.last_snapshot_at().elapsed() >= this.config.snapshot_interval;
                if (by_count || by_size || by_time) && this.log.refusal().is_none() {
                    let _ = this.snapshot().await;
                }
            }
        }))
    }

    /// At shutdown: a final snapshot if anything changed since the last one
    /// (also changes replayed at start), then flush and stop the log, and say
    /// what is not durable if anything is.
    ///
    /// After a failure under `always` no snapshot is taken: the writes the log
    /// could not make durable were answered `IOERR`, and the next start must
    /// not show them. Under `everysec` and `no` the snapshot is tried even when
    /// the log failed: it is a new file, and if it can be written it keeps
    /// every acknowledged write the log could not.
    pub async fn shutdown(&self) {
        let failed_always = self.config.fsync == FsyncPolicy::Always && self.log.refusal().is_some();
        if self.log.since_cut().0 > 0 && !failed_always {
            let _ = self.snapshot().await;
        }
        let log = Arc::clone(&self.log);
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
        match self.log.not_durable() {
            None => info!(last_seq = self.log.last_seq(), "every change is in the log or the final snapshot"),
            Some(range) => warn!(
                "records {}..={} are not on disk{}",
                range.start(),
                range.end(),
                if failed_always { " (their writes were answered IOERR)" } else { "" }
            ),
        }
    }

    /// Resolves with the log's error once a failure makes the server stop:
    /// any log failure under `fsync always`. Never resolves otherwise.
    pub async fn fatal_failure(&self) -> String {
        if self.config.fsync != FsyncPolicy::Always {
            return std::future::pending().await;
        }
        match self.log.wait_failed().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// The `# Persistence` section of INFO.
    pub fn info(&self) -> String {
        let stats = self.stats().clone();
        let status = self.log.status();
        let log_bytes: u64 = list(&self.dir)
            .map(|l| l.segments.iter().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out, "\n# Persistence");
        let _ = writeln!(out, "fsync:{}", self.config.fsync);
        let refusal = self.log.refusal();
        let _ = writeln!(out, "writes_enabled:{}", u8::from(refusal.is_none()));
        let unwritten = self.log.not_durable().map_or(0, |r| r.end() - r.start() + 1);
        let _ = writeln!(out, "log_not_durable_records:{unwritten}");
        let _ = writeln!(out, "log_last_seq:{}", self.log.last_seq());
        let _ = writeln!(out, "log_durable_seq:{}", status.durable_seq);
        let _ = writeln!(out, "log_bytes:{log_bytes}");
        let _ = writeln!(out, "log_backlogged:{}", u8::from(self.log.backlogged()));
        let _ = writeln!(out, "log_backlog_limit:{}", super::log::BACKLOG_LIMIT);
        let _ = writeln!(out, "log_backlog_waits:{}", self.log.backlog_waits());
        let (changes, log_bytes) = self.log.since_cut();
        let _ = writeln!(out, "changes_since_snapshot:{changes}");
        let _ = writeln!(out, "log_bytes_since_snapshot:{log_bytes}");
        let _ = writeln!(out, "snapshots_taken:{}", stats.snapshots);
        let _ = writeln!(out, "last_snapshot_unix_ms:{}", stats.last_snapshot_unix_ms.unwrap_or(0));
        let _ =
            writeln!(out, "last_snapshot_duration_ms:{}", stats.last_snapshot_duration.map_or(0, |d| d.as_millis()));
        let _ = writeln!(out, "last_snapshot_keys:{}", stats.last_snapshot_keys);
        let _ = writeln!(out, "last_snapshot_bytes:{}", stats.last_snapshot_bytes);
        let error = refusal.or(stats.last_error).unwrap_or_default();
        let _ = writeln!(out, "last_error:{}", error.replace('\n', " "));
        out
    }
}

/// Deletes what snapshots a crash interrupted left behind; the caller holds
/// the data dir's lock, so no one else is writing them. Failing to is logged,
/// not fatal: they only take space.
fn remove_snapshot_leftovers(dir: &Path) {
    let removed = list(dir).and_then(|listing| Ok((listing.leftovers.len(), remove_leftovers(dir, &listing)?)));
    match removed {
        Ok((0, _)) => {}
        Ok((files, bytes)) => info!(files, bytes, "removed temp files of snapshots a crash interrupted"),
        Err(e) => warn!(error = %e, "cannot remove temp files of interrupted snapshots"),
    }
}

/// Which log segments a new snapshot makes redundant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Superseded {
    /// Those whose records are all at or below the cut, as far as the file
    /// names tell (the next segment starts at or below `cut_seq + 1`); the
    /// newest stays, since a running log is still appending to it.
    ClosedSegments,
    /// Every segment: the caller knows no record is above the cut (an
    /// offline compaction that recovered everything first).
    AllSegments,
}

/// Deletes snapshots older than `cut_seq` and the segments `which` says the
/// snapshot at `cut_seq` covers. The one place that decides what a snapshot
/// supersedes, for the server and `cryptomem-tool compact`.
///
/// # Errors
/// I/O errors; a partial removal is safe to retry.
pub fn remove_superseded(disk: &dyn Disk, dir: &Path, cut_seq: u64, which: Superseded) -> Result<(), PersistError> {
    let listing = list(dir)?;
    let io = |file: &Path| {
        let file = file.to_path_buf();
        move |source| PersistError::Io { file, source }
    };
    for (seq, path) in &listing.snapshots {
        if *seq < cut_seq {
            disk.remove(path).map_err(io(path))?;
        }
    }
    for (i, (_, path)) in listing.segments.iter().enumerate() {
        let covered = match listing.segments.get(i + 1) {
            Some((next_first, _)) => *next_first <= cut_seq + 1,
            None => which == Superseded::AllSegments,
        };
        if covered {
            disk.remove(path).map_err(io(path))?;
        }
    }
    disk.sync_dir(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::PersistConfig;

    #[test]
    fn log_size_rule_needs_both_the_minimum_and_the_percentage() {
        let c = PersistConfig { snapshot_log_min_bytes: 100, snapshot_log_percentage: 50, ..PersistConfig::default() };
        assert!(!c.log_outgrew_snapshot(99, 0), "below the minimum");
        assert!(c.log_outgrew_snapshot(100, 0));
        assert!(!c.log_outgrew_snapshot(499, 1000), "below half of the last snapshot");
        assert!(c.log_outgrew_snapshot(500, 1000));
        let off = PersistConfig { snapshot_log_percentage: 0, ..c };
        assert!(!off.log_outgrew_snapshot(u64::MAX, 0));
        assert!(PersistConfig::default().log_outgrew_snapshot(64 << 20, 64 << 20));
        assert!(!PersistConfig::default().log_outgrew_snapshot((64 << 20) - 1, 0));
    }
}
