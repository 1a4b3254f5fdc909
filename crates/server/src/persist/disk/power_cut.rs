//! A disk that can lose power: it writes real files (the engine lists and
//! measures them) and keeps, beside them, a model of what a power loss
//! would leave. Test use only; its fsyncs do not reach the device.
//!
//! The model follows POSIX, not one filesystem's kindness:
//! - a file's bytes are durable up to its last fsync; bytes written after
//!   it may survive in part, as a prefix, followed by zeros or garbage;
//! - a directory entry (a creation, a rename, a removal) is durable once the
//!   directory is fsynced; until then each name may show either its state at
//!   the last directory fsync or its state now, independently of the others
//!   (harsher than ext4's ordered journal, so a missing directory fsync
//!   between a rename and a removal shows up);
//! - a file's bytes live with its inode, so a renamed file keeps what was
//!   fsynced before the rename.
//!
//! The disk counts operations and, at the one chosen, takes an [`Image`]
//! before the operation happens: every name with its durable and current
//! inode, and every inode's synced and unsynced bytes. The test then builds
//! one possible post-power-loss directory from it and recovers.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Disk, SegmentFile, SnapshotFile};
use crate::persist::log::{segment_header, segment_name};
use crate::persist::snapshot::SNAPSHOT_TEMP_PREFIX;

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct PowerCutDisk(Arc<Mutex<Model>>);

/// What a power loss at one moment may leave.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// The operation the power was cut before ("end" when the run finished first).
    pub before: &'static str,
    /// The number the test last passed to [`PowerCutDisk::mark`].
    pub mark: u64,
    /// Per file name: its inode at the last directory fsync and now.
    pub names: BTreeMap<String, (Option<u64>, Option<u64>)>,
    /// Per inode: bytes fsynced, bytes written after them.
    pub inodes: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Model {
    next_inode: u64,
    /// Per inode, everything written and how much of it is fsynced.
    inodes: BTreeMap<u64, (Vec<u8>, usize)>,
    current: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    ops: u64,
    cut_at: u64,
    mark: u64,
    image: Option<Image>,
}

impl Model {
    /// Counts an operation, taking the image first if it is the chosen one.
    fn op(&mut self, name: &'static str) {
        self.ops += 1;
        if self.ops == self.cut_at {
            self.image = Some(self.capture(name));
        }
    }

    fn capture(&self, before: &'static str) -> Image {
        let file_name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut names = BTreeMap::new();
        for (path, inode) in &self.durable {
            names.entry(file_name(path)).or_insert((None, None)).0 = Some(*inode);
        }
        for (path, inode) in &self.current {
            names.entry(file_name(path)).or_insert((None, None)).1 = Some(*inode);
        }
        let inodes = self
            .inodes
            .iter()
            .map(|(id, (data, synced))| (*id, (data[..*synced].to_vec(), data[*synced..].to_vec())))
            .collect();
        Image { before, mark: self.mark, names, inodes }
    }

    fn new_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, (Vec::new(), 0));
        self.next_inode
    }

    fn data(&mut self, inode: u64) -> &mut (Vec<u8>, usize) {
        self.inodes.entry(inode).or_default()
    }
}

impl PowerCutDisk {
    /// A disk that takes its image before its `cut_at`-th operation (1-based).
    pub fn cutting_before(cut_at: u64) -> Self {
        Self(Arc::new(Mutex::new(Model { cut_at, ..Model::default() })))
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a number of the test's (say, writes acknowledged so far) to be
    /// found in the image, so it is known as of the cut.
    pub fn mark(&self, n: u64) {
        self.model().mark = n;
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.model().ops
    }

    /// The image taken at the cut, or one taken now if the run ended first.
    pub fn image(&self) -> Image {
        let model = self.model();
        model.image.clone().unwrap_or_else(|| model.capture("end"))
    }

    fn tracked(&self, file: File, path: PathBuf, inode: u64) -> TrackedFile {
        TrackedFile { file, path, inode, disk: self.clone() }
    }
}

impl Disk for PowerCutDisk {
    fn create_segment(&self, dir: &Path, first_seq: u64) -> io::Result<Box<dyn SegmentFile>> {
        let path = dir.join(segment_name(first_seq));
        let header = segment_header(first_seq);
        let mut m = self.model();
        m.op("segment create");
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        file.write_all(&header)?;
        // Replacing an existing segment truncates its inode, as O_TRUNC does.
        let inode = match m.current.get(&path) {
            Some(inode) => *inode,
            None => m.new_inode(),
        };
        m.current.insert(path.clone(), inode);
        *m.data(inode) = (header.to_vec(), 0);
        drop(m);
        let mut tracked = self.tracked(file, path, inode);
        tracked.sync("segment sync");
        self.sync_dir(dir)?;
        Ok(Box::new(tracked))
    }

    fn create_snapshot_temp(&self, dir: &Path, _keep_head: usize) -> io::Result<Box<dyn SnapshotFile>> {
        let mut m = self.model();
        m.op("snapshot create");
        let inode = m.new_inode();
        let path = dir.join(format!("{SNAPSHOT_TEMP_PREFIX}{inode:06}"));
        let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        m.current.insert(path.clone(), inode);
        drop(m);
        Ok(Box::new(self.tracked(file, path, inode)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut m = self.model();
        m.op("rename");
        std::fs::rename(from, to)?;
        if let Some(inode) = m.current.remove(from) {
            m.current.insert(to.to_path_buf(), inode);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut m = self.model();
        m.op("remove");
        std::fs::remove_file(path)?;
        m.current.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut m = self.model();
        m.op("directory sync");
        let now: Vec<_> =
            m.current.iter().filter(|(p, _)| p.parent() == Some(dir)).map(|(p, i)| (p.clone(), *i)).collect();
        m.durable.retain(|p, _| p.parent() != Some(dir));
        m.durable.extend(now);
        Ok(())
    }
}

/// A real file whose writes the model mirrors.
struct TrackedFile {
    file: File,
    path: PathBuf,
    inode: u64,
    disk: PowerCutDisk,
}

impl TrackedFile {
    fn write(&mut self, op: &'static str, bytes: &[u8]) -> io::Result<()> {
        let mut m = self.disk.model();
        m.op(op);
        self.file.write_all(bytes)?;
        m.data(self.inode).0.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, op: &'static str) {
        let mut m = self.disk.model();
        m.op(op);
        let (data, synced) = m.data(self.inode);
        *synced = data.len();
    }
}

impl SegmentFile for TrackedFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write("segment append", bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync("segment sync");
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut m = self.disk.model();
        m.op("segment truncate");
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        let (data, synced) = m.data(self.inode);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(data.len());
        data.truncate(len);
        *synced = (*synced).min(len);
        Ok(())
    }
}

impl SnapshotFile for TrackedFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.write("snapshot write", data)
    }

    fn finish(mut self: Box<Self>, tail: &[u8], head: &[u8]) -> io::Result<()> {
        self.write("snapshot write", tail)?;
        {
            let mut m = self.disk.model();
            m.op("snapshot header");
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(head)?;
            let data = &mut m.data(self.inode).0;
            let n = head.len().min(data.len());
            data[..n].copy_from_slice(&head[..n]);
        }
        self.sync("snapshot sync");
        Ok(())
    }
}
