//! Every file operation the persistence engine does while the server runs,
//! behind a trait so tests can fill the disk up, refuse fsyncs, or cut the
//! power at any one of them.
//!
//! Production uses [`OsDisk`]. The engine needs: create a log segment
//! (header written and synced, directory synced), append to it, fsync it,
//! cut it back after a write that failed part way; write a snapshot to a
//! temp file, rename it into place; remove files; fsync a directory.
//! Recovery at startup and the offline tools read and repair files
//! directly: they run before any write can be acknowledged.
//!
//! Test disks: [`faults::FaultyDisk`] (full disk, failing or slow fsync) and
//! [`power_cut::PowerCutDisk`] (what a power loss keeps).

pub mod faults;
pub mod power_cut;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::direct_file::DirectFile;
use super::log::{segment_header, segment_name};
use super::snapshot::SNAPSHOT_TEMP_PREFIX;
use cryptomem_util::files::{PRIVATE_MODE, set_mode};

/// The data dir's file operations.
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Creates (or replaces) the segment starting at `first_seq` in `dir`,
    /// with its header written and synced and the directory synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>>;

    /// Creates a new, empty, private temp file in `dir` named
    /// `.tmp-snapshot-` plus six letters and digits, for a snapshot
    /// whose first `keep_head` bytes are patched at the end.
    ///
    /// # Errors
    /// Any I/O error.
    fn create_snapshot_temp(&self, dir: &Path, keep_head: usize) -> io::Result<Box<dyn SnapshotFile>> {
        let (_, path) = tempfile::Builder::new()
            .prefix(SNAPSHOT_TEMP_PREFIX)
            .rand_bytes(6)
            .tempfile_in(dir)?
            .keep()
            .map_err(|e| e.error)?;
        set_mode(&path, PRIVATE_MODE)?;
        // Past the page cache where the filesystem allows (see `direct_file`).
        Ok(Box::new(DirectFile::open(&path, keep_head)?))
    }

    /// `rename(2)`: atomic, durable only once the directory is synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// `unlink(2)`: durable only once the directory is synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// `fsync` of a directory: makes its entries' creations, renames and
    /// removals so far durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        cryptomem_util::files::sync_dir(dir)
    }
}

/// An open log segment.
pub trait SegmentFile: Send {
    /// Appends all of `bytes` at the current end.
    ///
    /// # Errors
    /// Any I/O error; part of `bytes` may have been written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    ///
    /// # Errors
    /// Any I/O error. Linux does not define what is on disk after one fails.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and appends from there on.
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// A snapshot temp file, written from the start (the contract of `direct_file`'s `DirectFile`).
pub trait SnapshotFile: Send {
    /// Where it is.
    fn path(&self) -> &Path;
    /// Appends `data`, a multiple of 4096 bytes (`O_DIRECT` alignment).
    ///
    /// # Errors
    /// Any I/O error.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Appends `tail`, replaces the first `head.len()` bytes with `head`,
    /// and syncs the file.
    ///
    /// # Errors
    /// Any I/O error.
    fn finish(self: Box<Self>, tail: &[u8], head: &[u8]) -> io::Result<()>;
}

/// Real files.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsDisk;

impl Disk for OsDisk {
    fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>> {
        let path = dir.join(segment_name(first_seq));
        let mut options = OpenOptions::new();
        options.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_MODE);
        let mut file = options.open(&path)?;
        file.write_all(&segment_header(first_seq))?;
        file.sync_all()?;
        self.sync_dir(dir)?;
        Ok(Box::new(file))
    }
}

impl SegmentFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len)).map(|_| ())
    }
}

impl SnapshotFile for DirectFile {
    fn path(&self) -> &Path {
        DirectFile::path(self)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        DirectFile::append(self, data)
    }

    fn finish(self: Box<Self>, tail: &[u8], head: &[u8]) -> io::Result<()> {
        DirectFile::finish(*self, tail, head).map(drop)
    }
}
