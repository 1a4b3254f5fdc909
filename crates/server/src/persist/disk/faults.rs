//! A disk that fills up, fails or slows down on command, for tests of
//! what the server does then. Not for production: its files are never fsynced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::{Disk, SegmentFile};
use crate::persist::log::{segment_header, segment_name};

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

impl Disk for FaultyDisk {
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
