//! The file operations the log writer does, behind a trait so tests can make
//! the disk fill up, refuse fsyncs, or free space again at chosen moments.
//!
//! Production uses [`OsDisk`]. The log writer needs only: create a segment
//! (header written and synced, directory synced), append, fsync, and cut a
//! segment back to a length after a write that failed part way.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::log::{segment_header, segment_name};
use cryptomem_util::files::{PRIVATE_MODE, sync_dir};

/// Creates log segments.
pub trait LogDisk: Send + Sync + std::fmt::Debug {
    /// Creates (or replaces) the segment starting at `first_seq` in `dir`,
    /// with its header written and synced and the directory synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>>;
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

/// Real files.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsDisk;

impl LogDisk for OsDisk {
    fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>> {
        let path = dir.join(segment_name(first_seq));
        let mut options = OpenOptions::new();
        options.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_MODE);
        let mut file = options.open(&path)?;
        file.write_all(&segment_header(first_seq))?;
        file.sync_all()?;
        sync_dir(dir)?;
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

pub mod faults {
    //! A disk that fills up, fails or slows down on command, for tests of
    //! what the server does then. Not for production: its files are never fsynced.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// Switches shared by a [`FaultyDisk`] and the test driving it.
    #[derive(Debug, Default)]
    pub struct Switches {
        /// While set, appends write half their bytes and then fail with ENOSPC,
        /// and creating a segment fails.
        pub full: AtomicBool,
        /// While set, fsyncs fail with EIO.
        pub fsync_fails: AtomicBool,
        /// Appends that failed.
        pub failed_appends: AtomicU64,
        /// Milliseconds every fsync takes (a slow or busy disk).
        pub sync_delay_ms: AtomicU64,
        /// Milliseconds every append takes (a stalled or throttled device).
        pub append_delay_ms: AtomicU64,
    }

    /// Real files with [`Switches`].
    #[derive(Debug, Clone, Default)]
    pub struct FaultyDisk(pub Arc<Switches>);

    struct FaultyFile(File, Arc<Switches>);

    fn no_space() -> io::Error {
        io::Error::from_raw_os_error(28) // ENOSPC
    }

    impl LogDisk for FaultyDisk {
        fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>> {
            if self.0.full.load(Ordering::SeqCst) {
                return Err(no_space());
            }
            let path = dir.join(segment_name(first_seq));
            let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
            file.write_all(&segment_header(first_seq))?;
            Ok(Box::new(FaultyFile(file, Arc::clone(&self.0))))
        }
    }

    impl SegmentFile for FaultyFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let delay = self.1.append_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            if self.1.full.load(Ordering::SeqCst) {
                self.1.failed_appends.fetch_add(1, Ordering::SeqCst);
                // A real full disk takes what fits, then refuses the rest.
                self.0.write_all(&bytes[..bytes.len() / 2])?;
                return Err(no_space());
            }
            self.0.write_all(bytes)
        }

        fn sync_data(&mut self) -> io::Result<()> {
            let delay = self.1.sync_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            if self.1.fsync_fails.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.0.truncate(len)
        }
    }

    /// Real files that remember how much of each segment was fsynced, so a
    /// test can cut the power: [`PowerCutDisk::durable`] says, at the
    /// moment of the cut, what a power loss keeps for certain (each
    /// segment's bytes up to its last successful fsync; the segments whose
    /// directory entry was synced, which is every segment created, since
    /// creation syncs the directory). The test then rewrites the files to
    /// that plus whatever torn tail it wants to try. Its fsyncs only record
    /// the length (the page cache is the test's "disk").
    #[derive(Debug, Clone, Default)]
    pub struct PowerCutDisk(Arc<std::sync::Mutex<Vec<Tracked>>>);

    /// A segment and its fsynced length.
    type Tracked = (std::path::PathBuf, Arc<AtomicU64>);

    struct TrackedFile {
        file: File,
        written: u64,
        synced: Arc<AtomicU64>,
    }

    impl PowerCutDisk {
        /// Every segment created so far with its fsynced length, now.
        pub fn durable(&self) -> Vec<(std::path::PathBuf, u64)> {
            let files = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            files.iter().map(|(path, synced)| (path.clone(), synced.load(Ordering::SeqCst))).collect()
        }
    }

    impl LogDisk for PowerCutDisk {
        fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>> {
            let path = dir.join(segment_name(first_seq));
            let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
            let header = segment_header(first_seq);
            file.write_all(&header)?;
            let len = header.len() as u64;
            let synced = Arc::new(AtomicU64::new(len));
            let mut files = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            files.retain(|(p, _)| *p != path);
            files.push((path, Arc::clone(&synced)));
            Ok(Box::new(TrackedFile { file, written: len, synced }))
        }
    }

    impl SegmentFile for TrackedFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.file.write_all(bytes)?;
            self.written += bytes.len() as u64;
            Ok(())
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.synced.store(self.written, Ordering::SeqCst);
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.file.truncate(len)?;
            self.written = len;
            self.synced.fetch_min(len, Ordering::SeqCst);
            Ok(())
        }
    }
}
