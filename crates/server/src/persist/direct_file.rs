//! Writing a large file past the page cache (`O_DIRECT`), for snapshots.
//!
//! Writing a snapshot through the page cache made the kernel allocate, copy
//! and later write back hundreds of megabytes on the server's behalf, outside
//! any priority we can give our own thread: on 2 cores, request p99 doubled
//! while it happened, and the same held for `dd` writing as much at
//! `SCHED_IDLE`. With `O_DIRECT` the data goes from our buffer to the device
//! and request latency barely moves. Nothing reads a snapshot back while the
//! server runs, so the page cache had nothing to offer.
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length
//! aligned to the device's block size; [`ALIGN`] (4 KiB) covers the usual 512
//! and 4096. Data is appended in multiples of [`ALIGN`] through an aligned
//! staging buffer; [`DirectFile::finish`] pads the last piece, rewrites the
//! file's first bytes (the snapshot header, whose entry count is known only
//! at the end), cuts the file to its exact length and syncs it. Where the
//! filesystem refuses `O_DIRECT` (tmpfs, some network filesystems) the same
//! calls write through the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Alignment of buffers, offsets and lengths for `O_DIRECT`.
pub const ALIGN: usize = 4096;
/// Largest piece written at once.
const STAGE: usize = 1 << 20;

/// A file being written from the start, sequentially.
pub struct DirectFile {
    path: PathBuf,
    file: File,
    direct: bool,
    /// Aligned staging memory: `stage[off..off + STAGE]` is `ALIGN`-aligned.
    stage: Vec<u8>,
    off: usize,
    /// Bytes appended so far (always a multiple of `ALIGN` while direct).
    pos: u64,
    /// A copy of the file's first `keep` bytes, to rewrite at the end.
    head: Vec<u8>,
    keep: usize,
}

impl DirectFile {
    /// Opens `path` (an existing, empty file) for writing, with `O_DIRECT`
    /// where the filesystem allows it. The first `keep_head` bytes appended
    /// are remembered so that [`DirectFile::finish`] can patch them.
    ///
    /// # Errors
    /// I/O errors opening the file.
    pub fn open(path: &Path, keep_head: usize) -> io::Result<Self> {
        match open_direct(path) {
            Ok(file) => Ok(Self::with_file(path, file, true, keep_head)),
            Err(_) => Self::open_buffered(path, keep_head),
        }
    }

    /// As [`DirectFile::open`], through the page cache.
    ///
    /// # Errors
    /// I/O errors opening the file.
    pub fn open_buffered(path: &Path, keep_head: usize) -> io::Result<Self> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Self::with_file(path, file, false, keep_head))
    }

    fn with_file(path: &Path, file: File, direct: bool, keep_head: usize) -> Self {
        let stage = vec![0u8; STAGE + ALIGN];
        let off = stage.as_ptr().align_offset(ALIGN).min(ALIGN);
        let keep = keep_head.next_multiple_of(ALIGN);
        Self { path: path.to_path_buf(), file, direct, stage, off, pos: 0, head: Vec::new(), keep }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`, whose length must be a multiple of [`ALIGN`].
    ///
    /// # Errors
    /// I/O errors; `InvalidInput` for a length that is not a multiple of [`ALIGN`].
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if !data.len().is_multiple_of(ALIGN) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "direct writes come in whole blocks"));
        }
        if self.head.len() < self.keep {
            let take = (self.keep - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        for piece in data.chunks(STAGE) {
            self.write_piece(piece)?;
        }
        Ok(())
    }

    fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.direct {
            let stage = &mut self.stage[self.off..self.off + piece.len()];
            stage.copy_from_slice(piece);
            match self.file.write_all(stage) {
                Ok(()) => {}
                // Some filesystems accept O_DIRECT at open and refuse it
                // here: go on through the page cache, on a descriptor
                // opened without it, from where this piece starts.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    let at = self.file.stream_position()?;
                    self.file = OpenOptions::new().write(true).open(&self.path)?;
                    self.file.seek(SeekFrom::Start(at))?;
                    self.direct = false;
                    self.file.write_all(piece)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.file.write_all(piece)?;
        }
        self.pos += piece.len() as u64;
        Ok(())
    }

    /// Writes `tail` (any length), replaces the file's first `head.len()`
    /// bytes with `head`, cuts the file to its exact length and syncs it.
    ///
    /// # Errors
    /// I/O errors; `InvalidInput` when `head` is longer than the kept head
    /// or than the file.
    pub fn finish(mut self, tail: &[u8], head: &[u8]) -> io::Result<File> {
        let appended = self.pos;
        let len = appended + tail.len() as u64;
        if head.len() > self.keep.max(tail.len()) || head.len() as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the header to patch is longer than what was kept",
            ));
        }
        let mut last = tail.to_vec();
        overlay(&mut last, appended, head);
        last.resize(last.len().next_multiple_of(ALIGN), 0);
        for piece in last.chunks(STAGE) {
            self.write_piece(piece)?;
        }
        if appended > 0 && !head.is_empty() {
            // The kept copy of the file's start, patched and written again.
            let mut first = std::mem::take(&mut self.head);
            overlay(&mut first, 0, head);
            self.file.seek(SeekFrom::Start(0))?;
            for piece in first.chunks(STAGE) {
                self.write_piece(piece)?;
            }
        }
        self.file.set_len(len)?;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

/// Copies the bytes of `head` (the file's first bytes) that fall into `buf`,
/// which holds the file's bytes from offset `at`.
fn overlay(buf: &mut [u8], at: u64, head: &[u8]) {
    let Ok(at) = usize::try_from(at) else { return };
    if at >= head.len() {
        return;
    }
    let n = (head.len() - at).min(buf.len());
    buf[..n].copy_from_slice(&head[at..at + n]);
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "O_DIRECT is used on Linux only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(total: usize, keep: usize, direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut f = if direct {
            DirectFile::open(&path, keep).unwrap()
        } else {
            DirectFile::open_buffered(&path, keep).unwrap()
        };
        let whole = total / ALIGN * ALIGN;
        let split = whole / 2 / ALIGN * ALIGN;
        f.append(&data[..split]).unwrap();
        f.append(&data[split..whole]).unwrap();
        let head = vec![0xEEu8; keep.min(total)];
        f.finish(&data[whole..], &head).unwrap();
        let mut expected = data.clone();
        expected[..head.len()].copy_from_slice(&head);
        assert_eq!(std::fs::read(&path).unwrap(), expected, "{total} bytes, head {keep}, direct {direct}");
    }

    #[test]
    fn any_length_reads_back_with_its_head_patched() {
        for (total, keep) in
            [(0, 0), (10, 4), (ALIGN, 100), (ALIGN + 1, 100), (3 * STAGE + 12_345, 40_000), (5000, 5000), (9000, 8500)]
        {
            roundtrip(total, keep, true);
            roundtrip(total, keep, false);
        }
    }

    #[test]
    fn partial_blocks_are_refused_before_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let mut f = DirectFile::open(&path, 0).unwrap();
        assert_eq!(f.append(&[1, 2, 3]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
