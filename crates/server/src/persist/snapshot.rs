//! Snapshot files: the whole keyspace at one sequence-number cut.
//!
//! # File `snapshot-<cut_seq, 20 digits>.cms`
//!
//! Header, `H = 36 + 8n` bytes:
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 4    | magic `"CMSN"`                                           |
//! | 4      | 4    | format version, big-endian u32: 2 (1 is still read)    |
//! | 8      | 8    | creation time, Unix ms                                  |
//! | 16     | 8    | `cut_seq`: every change up to it is included, none after |
//! | 24     | 8    | number of entries                                       |
//! | 32     | 4    | `n`, number of shards of the writing server (at most 65,536) |
//! | 36     | 8n   | per shard, the last sequence number applied to it       |
//! | 36+8n  | 4    | CRC-32 of bytes 0..36+8n                                 |
//!
//! Body: one [`super::frame`] frame per entry, holding a [`SnapshotEntry`]
//! (key, value exactly as stored, expiry, version). Format 1 entries
//! ([`super::frame::SnapshotEntryV1`], written before keys had versions) lack
//! the version; they are read with the snapshot's `cut_seq` as every key's
//! version, which is above nothing a client can hold and below every later
//! change.
//!
//! Trailer, 16 bytes:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | magic `"CMSE"`                           |
//! | 4      | 8    | number of entries (equals the header's) |
//! | 12     | 4    | CRC-32 of the whole body                |
//!
//! Snapshots are written to a temp file in the data dir, fsynced, renamed into
//! place and the directory fsynced, so a visible snapshot is always complete.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::PersistError;
use super::direct_file::ALIGN;
use super::disk::{Disk, SnapshotFile};
use super::frame::{
    FRAME_HEADER_LEN, FrameHeader, SnapshotEntry, SnapshotEntryRef, SnapshotEntryV1, append_frame, be_u32, be_u64,
    decode,
};
use crate::store::Cut;

/// Header magic.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CMSN";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 4] = *b"CMSE";
/// Format version.
pub const SNAPSHOT_VERSION: u32 = 2;
const FIXED_HEADER_LEN: usize = 36;
const TRAILER_LEN: usize = 16;
/// Most shards a header may list.
pub const MAX_SHARDS: usize = 1 << 16;

/// The file name of the snapshot at `cut_seq`.
pub fn snapshot_name(cut_seq: u64) -> String {
    format!("snapshot-{cut_seq:020}.cms")
}

/// Prefix of the temp file a snapshot is written to before its rename.
pub const SNAPSHOT_TEMP_PREFIX: &str = ".tmp-snapshot-";

/// Whether `name` is a snapshot temp file: the prefix, then the six letters
/// and digits `tempfile` adds, nothing else.
pub fn is_snapshot_temp_name(name: &str) -> bool {
    name.strip_prefix(SNAPSHOT_TEMP_PREFIX)
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The cut sequence number in a snapshot file name, if it is one.
pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?.strip_suffix(".cms")?.parse().ok()
}

/// A snapshot header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Creation time, Unix ms.
    pub created_unix_ms: u64,
    /// The cut.
    pub cut_seq: u64,
    /// Entries in the body.
    pub entries: u64,
    /// Per-shard last sequence numbers.
    pub shard_seqs: Vec<u64>,
}

impl SnapshotHeader {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(FIXED_HEADER_LEN + 8 * self.shard_seqs.len() + 4);
        h.extend_from_slice(&SNAPSHOT_MAGIC);
        h.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        h.extend_from_slice(&self.created_unix_ms.to_be_bytes());
        h.extend_from_slice(&self.cut_seq.to_be_bytes());
        h.extend_from_slice(&self.entries.to_be_bytes());
        h.extend_from_slice(&(self.shard_seqs.len() as u32).to_be_bytes());
        for s in &self.shard_seqs {
            h.extend_from_slice(&s.to_be_bytes());
        }
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_be_bytes());
        h
    }
}

/// Writes a snapshot of `cut` into `dir` through `disk`, skipping entries
/// expired at `now_ms`, calling `progress` with the entry count every
/// 100,000 entries. Returns the final path and header.
///
/// # Errors
/// [`PersistError::Io`]; the temp file is removed.
pub fn write_snapshot(
    disk: &dyn Disk,
    dir: &Path,
    cut: Cut,
    now_ms: u64,
    progress: impl FnMut(u64),
) -> Result<(PathBuf, SnapshotHeader), PersistError> {
    let path = dir.join(snapshot_name(cut.seq));
    let io_err = |source| PersistError::Io { file: path.clone(), source };
    let header =
        SnapshotHeader { created_unix_ms: now_ms, cut_seq: cut.seq, entries: 0, shard_seqs: cut.shard_seqs.clone() };
    let file = disk.create_snapshot_temp(dir, header.encode().len()).map_err(io_err)?;
    let tmp = file.path().to_path_buf();
    let written = write_body(file, header, cut, now_ms, progress)
        .and_then(|header| disk.rename(&tmp, &path).map(|()| header))
        .and_then(|header| disk.sync_dir(dir).map(|()| header));
    match written {
        Ok(header) => Ok((path, header)),
        Err(e) => {
            let _ = disk.remove(&tmp);
            Err(io_err(e))
        }
    }
}

/// Writes the header, the entries and the trailer into `file` and syncs it.
fn write_body(
    mut file: Box<dyn SnapshotFile>,
    mut header: SnapshotHeader,
    cut: Cut,
    now_ms: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<SnapshotHeader> {
    let header_len = header.encode().len();
    // Frames are encoded straight into this buffer, written out in 1 MiB pieces.
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + (64 << 10));
    out.extend_from_slice(&header.encode());
    let mut body_crc = crc32fast::Hasher::new();
    // Each shard's version is dropped once written: while the snapshot holds
    // it, every node and item the server replaces or evicts in that shard
    // stays allocated, which under eviction was a fifth of a small limit.
    for map in cut.maps {
        let mut items = map.iter();
        // Per shard: it borrows from the shard's version, dropped below.
        let mut batch: Vec<&crate::store::Item> = Vec::with_capacity(TOUCH_AHEAD);
        loop {
            batch.clear();
            batch.extend(items.by_ref().take(TOUCH_AHEAD));
            if batch.is_empty() {
                break;
            }
            touch(&batch);
            for &item in &batch {
                if !item.is_live(now_ms) {
                    continue;
                }
                let start = out.len();
                let entry = SnapshotEntryRef {
                    key: item.key(),
                    value: item.value(),
                    expires_at_ms: item.expires_at_ms(),
                    version: item.version(),
                };
                append_frame(&mut out, &entry).map_err(io::Error::other)?;
                body_crc.update(&out[start..]);
                if out.len() >= WRITE_CHUNK {
                    let whole = out.len() / ALIGN * ALIGN;
                    file.append(&out[..whole])?;
                    out.drain(..whole);
                }
                header.entries += 1;
                if header.entries.is_multiple_of(100_000) {
                    progress(header.entries);
                }
            }
        }
    }
    out.extend_from_slice(&TRAILER_MAGIC);
    out.extend_from_slice(&header.entries.to_be_bytes());
    out.extend_from_slice(&body_crc.finalize().to_be_bytes());
    // The entry count is only known now; the header has a fixed size, so it
    // is rewritten in place. `finish` also syncs the file.
    let encoded = header.encode();
    debug_assert_eq!(encoded.len(), header_len);
    file.finish(&out, &encoded)?;
    Ok(header)
}

/// Bytes gathered before each write to the file.
const WRITE_CHUNK: usize = 1 << 20;

/// Items whose memory is requested together before they are written.
const TOUCH_AHEAD: usize = 32;

/// Reads one byte at each end of every item, in a loop with no other work, so
/// the CPU has all the cache misses in flight at once instead of one after
/// another. Items live wherever they were allocated, and a snapshot used to
/// spend most of its time waiting for each one in turn.
fn touch(items: &[&crate::store::Item]) {
    let mut sum = 0u8;
    for item in items {
        sum = sum.wrapping_add(item.key().first().copied().unwrap_or(0));
        sum = sum.wrapping_add(item.value().last().copied().unwrap_or(0));
    }
    std::hint::black_box(sum);
}

/// Reads and checks a snapshot, one entry at a time.
pub struct SnapshotReader {
    path: PathBuf,
    file: BufReader<File>,
    len: u64,
    offset: u64,
    header: SnapshotHeader,
    /// The file's format version (1 or 2).
    format: u32,
    seen: u64,
    body_crc: crc32fast::Hasher,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader").field("path", &self.path).field("offset", &self.offset).finish()
    }
}

impl SnapshotReader {
    /// Opens `path` and checks its header.
    ///
    /// # Errors
    /// [`PersistError::Io`] or [`PersistError::Corrupted`] at the header.
    pub fn open(path: &Path) -> Result<Self, PersistError> {
        let io_err = |source| PersistError::Io { file: path.to_path_buf(), source };
        let corrupt =
            |offset: u64, reason: String| PersistError::Corrupted { file: path.to_path_buf(), offset, reason };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut fixed = [0u8; FIXED_HEADER_LEN];
        read_exact_or(&mut file, &mut fixed, || corrupt(0, "file is shorter than a snapshot header".into()))?;
        if fixed[..4] != SNAPSHOT_MAGIC {
            return Err(corrupt(0, "bad magic: not a cryptomem snapshot".into()));
        }
        let field64 = |at: usize| be_u64(&fixed, at).ok_or_else(|| corrupt(at as u64, "header is too short".into()));
        let field32 = |at: usize| be_u32(&fixed, at).ok_or_else(|| corrupt(at as u64, "header is too short".into()));
        let version = field32(4)?;
        if version != 1 && version != SNAPSHOT_VERSION {
            return Err(corrupt(4, format!("format version {version}; this build reads 1 and {SNAPSHOT_VERSION}")));
        }
        let shards = field32(32)? as usize;
        if shards > MAX_SHARDS {
            return Err(corrupt(32, format!("shard count {shards} exceeds {MAX_SHARDS}")));
        }
        let mut rest = vec![0u8; 8 * shards + 4];
        read_exact_or(&mut file, &mut rest, || corrupt(FIXED_HEADER_LEN as u64, "header is truncated".into()))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed);
        crc.update(&rest[..8 * shards]);
        let stored = be_u32(&rest, 8 * shards);
        if Some(crc.finalize()) != stored {
            return Err(corrupt(0, "header CRC mismatch".into()));
        }
        let shard_seqs = (0..shards).filter_map(|i| be_u64(&rest, 8 * i)).collect();
        let header =
            SnapshotHeader { created_unix_ms: field64(8)?, cut_seq: field64(16)?, entries: field64(24)?, shard_seqs };
        let offset = (FIXED_HEADER_LEN + rest.len()) as u64;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            offset,
            header,
            format: version,
            seen: 0,
            body_crc: crc32fast::Hasher::new(),
        })
    }

    /// The checked header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Bytes read and checked so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> PersistError {
        corrupted(&self.path, offset, reason)
    }

    /// The next entry, `Ok(None)` after the last one once the trailer checked out.
    ///
    /// # Errors
    /// [`PersistError::Corrupted`] with the entry's offset, or I/O errors.
    pub fn next_entry(&mut self) -> Result<Option<SnapshotEntry>, PersistError> {
        if self.seen == self.header.entries {
            self.check_trailer()?;
            return Ok(None);
        }
        let at = self.offset;
        let mut head = [0u8; FRAME_HEADER_LEN];
        let path = self.path.clone();
        read_exact_or(&mut self.file, &mut head, || {
            corrupted(&path, at, "file ends inside an entry: the snapshot is truncated")
        })?;
        let frame = FrameHeader::parse(&head).map_err(|reason| self.corrupt(at, format!("entry: {reason}")))?;
        let len = frame.len;
        if at + (FRAME_HEADER_LEN + len) as u64 > self.len {
            return Err(self.corrupt(at, "file ends inside an entry: the snapshot is truncated"));
        }
        let mut payload = vec![0u8; len];
        read_exact_or(&mut self.file, &mut payload, || {
            corrupted(&path, at, "file ends inside an entry: the snapshot is truncated")
        })?;
        if !frame.matches(&payload) {
            return Err(self.corrupt(at, "entry CRC mismatch"));
        }
        let undecodable = |e| self.corrupt(at, format!("undecodable entry: {e}"));
        let entry = if self.format == 1 {
            let SnapshotEntryV1 { key, value, expires_at_ms } = decode(&payload).map_err(undecodable)?;
            SnapshotEntry { key, value, expires_at_ms, version: self.header.cut_seq }
        } else {
            decode(&payload).map_err(undecodable)?
        };
        self.body_crc.update(&head);
        self.body_crc.update(&payload);
        self.offset += (FRAME_HEADER_LEN + len) as u64;
        self.seen += 1;
        Ok(Some(entry))
    }

    fn check_trailer(&mut self) -> Result<(), PersistError> {
        let at = self.offset;
        let mut t = [0u8; TRAILER_LEN];
        let path = self.path.clone();
        read_exact_or(&mut self.file, &mut t, || corrupted(&path, at, "trailer missing: the snapshot is truncated"))?;
        if t[..4] != TRAILER_MAGIC {
            return Err(self.corrupt(at, "bad trailer magic"));
        }
        let (Some(count), Some(crc)) = (be_u64(&t, 4), be_u32(&t, 12)) else {
            return Err(self.corrupt(at, "trailer is too short"));
        };
        if count != self.header.entries {
            return Err(self.corrupt(at + 4, format!("trailer counts {count} entries, header {}", self.header.entries)));
        }
        if crc != self.body_crc.clone().finalize() {
            return Err(self.corrupt(at + 12, "body CRC mismatch"));
        }
        if at + TRAILER_LEN as u64 != self.len {
            return Err(self.corrupt(at + TRAILER_LEN as u64, "unexpected bytes after the trailer"));
        }
        Ok(())
    }
}

fn corrupted(path: &Path, offset: u64, reason: impl Into<String>) -> PersistError {
    PersistError::Corrupted { file: path.to_path_buf(), offset, reason: reason.into() }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], eof: impl FnOnce() -> PersistError) -> Result<(), PersistError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(eof()),
        Err(e) => Err(PersistError::Io { file: PathBuf::from("(snapshot)"), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::persist::disk::OsDisk;
    use crate::store::{SetCondition, Store};

    #[test]
    fn each_shard_is_let_go_once_written() {
        let store = Store::new(2);
        for i in 0..250_000u32 {
            assert!(store.set(&i.to_be_bytes(), b"v", None, SetCondition::Always, 1).unwrap().outcome);
        }
        let cut = store.cut(|| 7);
        let first = Arc::downgrade(&cut.maps[0]);
        // Writes after the cut publish new versions: only the cut holds these.
        for i in 0..100u32 {
            assert!(store.set(&i.to_be_bytes(), b"w", None, SetCondition::Always, 1).unwrap().outcome);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut alive = Vec::new();
        let (_, header) =
            write_snapshot(&OsDisk, dir.path(), cut, 1, |_| alive.push(first.upgrade().is_some())).unwrap();
        assert_eq!(header.entries, 250_000);
        // Progress comes every 100,000 entries: in the first shard (about
        // 125,000 keys), then in the second.
        assert_eq!(alive, [true, false]);
    }
}
