//! Durable, atomic file writes.
//!
//! Written with the standard library alone (not `tempfile`) so that the
//! client crate, which saves credentials files through it, pulls in no
//! platform crates: the temp file is created with `create_new` (O_EXCL) under
//! a name from the process id, the time and a counter, and its mode is set
//! before a byte is written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Unix permission bits for files holding secrets.
pub const PRIVATE_MODE: u32 = 0o600;
/// Unix permission bits for files anyone may read.
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically with permission bits `mode`: a temp
/// file in the same directory gets the mode before any byte is written, is
/// fsynced, renamed over `path`, and the directory is fsynced. A crash leaves
/// either the old file or the new one, never a torn or world-readable one.
///
/// # Errors
/// Any I/O error; the temp file is removed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (tmp_path, mut file) = create_temp(dir, mode)?;
    let written = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    sync_dir(dir)
}

/// Prefix of the temp files [`write_atomic`] creates (and leaves behind only
/// if the process dies between creating and renaming one).
pub const TEMP_PREFIX: &str = ".tmp-";

/// A new file in `dir` with mode `mode`, under a name no other file has.
fn create_temp(dir: &Path, mode: u32) -> io::Result<(std::path::PathBuf, File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let candidate = dir.join(format!("{TEMP_PREFIX}{}-{nanos:x}-{n}", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        match options.open(&candidate) {
            Ok(file) => {
                // The umask may have cleared bits the caller asked for.
                set_mode(&candidate, mode)?;
                return Ok((candidate, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Fsyncs a directory so a rename or create in it is durable.
///
/// # Errors
/// I/O errors opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) if missing; a directory this call creates gets mode 0700.
///
/// # Errors
/// I/O errors.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Sets Unix permission bits (a no-op elsewhere, where there are none).
///
/// # Errors
/// I/O errors.
#[cfg(unix)]
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Sets Unix permission bits (a no-op elsewhere, where there are none).
///
/// # Errors
/// Never.
#[cfg(not(unix))]
pub fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", PRIVATE_MODE).unwrap();
        write_atomic(&p, b"two", PRIVATE_MODE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp files left behind");
    }
}
