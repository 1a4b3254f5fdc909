//! The static keys the server accepts handshakes to, and their rotation.
//!
//! `server.key` holds the current key ([`crate::secure::identity`]). After a
//! rotation the previous keys stay accepted until a deadline, listed in
//! `server-retired.key` (mode 0600, UTF-8 text):
//!
//! ```text
//! cryptomem-retired-server-keys v1
//! <64 lowercase hex digits: X25519 private key> <accepted until, unix milliseconds>
//! ...
//! ```
//!
//! One line per retired key, newest first; blank lines are ignored. A key
//! past its deadline is no longer accepted and is dropped at the next
//! rotation. A missing file means no retired keys.
//!
//! [`rotate`] makes the change a running server picks up within a second
//! (the token watcher also watches these two files), so connections keep
//! their sessions and clients pinning either key connect during the grace
//! period. Its steps are ordered for crash safety: the retired file gains
//! the old key first, then `server.key` and `server.pub` are replaced, each
//! atomically; a crash in between leaves the old key both current and
//! retired, which is harmless, and running `rotate` again finishes the job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::data_dir::{DataDirError, SERVER_KEY_FILE, SERVER_PUB_FILE};
use crate::secure::{SecureError, ServerIdentity};
use cryptomem_util::files::{PRIVATE_MODE, PUBLIC_MODE, write_atomic};

/// `server-retired.key`.
pub const RETIRED_KEYS_FILE: &str = "server-retired.key";
const RETIRED_HEADER: &str = "cryptomem-retired-server-keys v1";

/// A previous server key, accepted until a deadline.
#[derive(Debug, Clone)]
pub struct RetiredKey {
    /// The key pair.
    pub identity: ServerIdentity,
    /// Handshakes to it are accepted until this time (unix ms).
    pub until_unix_ms: u64,
}

/// The current key and the retired keys still within their grace period.
#[derive(Debug, Clone)]
pub struct ServerKeys {
    /// What `server.key` holds; new credentials pin it.
    pub current: ServerIdentity,
    /// Newest first.
    pub retired: Vec<RetiredKey>,
}

impl ServerKeys {
    /// Reads `server.key` and `server-retired.key` from a data dir.
    ///
    /// # Errors
    /// [`DataDirError`] naming the file (never key bytes).
    pub fn load(root: &Path) -> Result<Self, DataDirError> {
        let current = ServerIdentity::load(&root.join(SERVER_KEY_FILE))?;
        let retired = load_retired(&root.join(RETIRED_KEYS_FILE))?;
        Ok(Self { current, retired })
    }

    /// The private keys a handshake at `now_ms` may use, current first.
    pub fn accepted(&self, now_ms: u64) -> Vec<StaticSecret> {
        std::iter::once(self.current.secret().clone())
            .chain(self.retired.iter().filter(|r| r.until_unix_ms > now_ms).map(|r| r.identity.secret().clone()))
            .collect()
    }

    /// The public keys accepted at `now_ms`, as hex, current first.
    pub fn accepted_public_hex(&self, now_ms: u64) -> Vec<String> {
        std::iter::once(self.current.public_hex())
            .chain(self.retired.iter().filter(|r| r.until_unix_ms > now_ms).map(|r| r.identity.public_hex()))
            .collect()
    }
}

type Stamp = [Option<(std::time::SystemTime, u64)>; 2];

/// The keys a running server accepts, reloaded when their files change.
pub(crate) struct LiveKeys {
    root: PathBuf,
    keys: arc_swap::ArcSwap<ServerKeys>,
    stamp: std::sync::Mutex<Stamp>,
}

impl LiveKeys {
    pub(crate) fn new(root: &Path, keys: ServerKeys) -> Self {
        Self {
            stamp: std::sync::Mutex::new(stamp(root)),
            root: root.to_path_buf(),
            keys: arc_swap::ArcSwap::from_pointee(keys),
        }
    }

    pub(crate) fn load(&self) -> std::sync::Arc<ServerKeys> {
        self.keys.load_full()
    }

    /// Rereads the key files if either changed on disk; returns whether the
    /// accepted keys changed. On an error the previous keys stay in use.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, DataDirError> {
        let now = stamp(&self.root);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let keys = ServerKeys::load(&self.root)?;
        let old = self.keys.load();
        let same =
            old.current.public_hex() == keys.current.public_hex()
                && old.retired.len() == keys.retired.len()
                && old.retired.iter().zip(&keys.retired).all(|(a, b)| {
                    a.until_unix_ms == b.until_unix_ms && a.identity.public_hex() == b.identity.public_hex()
                });
        self.keys.store(std::sync::Arc::new(keys));
        Ok(!same)
    }
}

fn stamp(root: &Path) -> Stamp {
    let one = |name: &str| {
        let meta = std::fs::metadata(root.join(name)).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    [one(SERVER_KEY_FILE), one(RETIRED_KEYS_FILE)]
}

fn load_retired(path: &Path) -> Result<Vec<RetiredKey>, DataDirError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DataDirError::Io { path: path.to_path_buf(), source }),
    };
    parse_retired(&text).map_err(|reason| SecureError::KeyFile(format!("{}: {reason}", path.display())).into())
}

fn parse_retired(text: &str) -> Result<Vec<RetiredKey>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(RETIRED_HEADER) {
        return Err(format!("missing the `{RETIRED_HEADER}` header line"));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let bad = || format!("line {}: expected `<64 hex digits> <unix ms>`", i + 2);
            let (key_hex, until) = line.split_once(' ').ok_or_else(bad)?;
            let mut bytes = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(key_hex, &mut bytes[..]).map_err(|_| bad())?;
            let until_unix_ms = until.trim().parse().map_err(|_| bad())?;
            Ok(RetiredKey { identity: ServerIdentity::from_secret(StaticSecret::from(*bytes)), until_unix_ms })
        })
        .collect()
}

fn retired_text(retired: &[RetiredKey]) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!("{RETIRED_HEADER}\n"));
    for r in retired {
        text.push_str(&hex::encode(r.identity.secret().as_bytes()));
        text.push_str(&format!(" {}\n", r.until_unix_ms));
    }
    text
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new current public key (hex).
    pub new_public: String,
    /// The key it replaced (hex), accepted until `until_unix_ms`.
    pub old_public: String,
    /// End of the old key's grace period (unix ms).
    pub until_unix_ms: u64,
    /// Every key accepted from now on, current first (hex): what credentials should pin.
    pub accepted: Vec<String>,
}

/// Makes a new server key current and keeps the old one accepted for
/// `grace` (0: not at all). Keys retired earlier keep their deadline or the
/// same one, whichever comes first (so `grace` 0 ends every old key's
/// acceptance, as after a key compromise); keys past it are dropped.
///
/// # Errors
/// [`DataDirError`] if a key file cannot be read or written.
pub fn rotate(root: &Path, grace: Duration, now_ms: u64) -> Result<Rotation, DataDirError> {
    let keys = ServerKeys::load(root)?;
    let until_unix_ms = now_ms.saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let new = ServerIdentity::generate()?;
    let old_public = keys.current.public_hex();
    let mut retired = vec![RetiredKey { identity: keys.current, until_unix_ms }];
    retired.extend(keys.retired.into_iter().filter(|r| r.identity.public_hex() != old_public).map(|mut r| {
        r.until_unix_ms = r.until_unix_ms.min(until_unix_ms);
        r
    }));
    retired.retain(|r| r.until_unix_ms > now_ms);
    write(root.join(RETIRED_KEYS_FILE), retired_text(&retired).as_bytes(), PRIVATE_MODE)?;
    write(root.join(SERVER_KEY_FILE), new.to_key_file().as_bytes(), PRIVATE_MODE)?;
    write(root.join(SERVER_PUB_FILE), format!("{}\n", new.public_hex()).as_bytes(), PUBLIC_MODE)?;
    let keys = ServerKeys { current: new, retired };
    Ok(Rotation {
        new_public: keys.current.public_hex(),
        old_public,
        until_unix_ms,
        accepted: keys.accepted_public_hex(now_ms),
    })
}

fn write(path: PathBuf, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    write_atomic(&path, bytes, mode).map_err(|source| DataDirError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let id = ServerIdentity::generate().unwrap();
        std::fs::write(tmp.path().join(SERVER_KEY_FILE), id.to_key_file().as_bytes()).unwrap();
        tmp
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_grace_period_only() {
        let tmp = data_dir();
        let before = ServerKeys::load(tmp.path()).unwrap();
        assert!(before.retired.is_empty(), "no retired file means no retired keys");
        let r = rotate(tmp.path(), Duration::from_secs(60), 1_000).unwrap();
        assert_eq!(r.old_public, before.current.public_hex());
        assert_eq!(r.accepted, vec![r.new_public.clone(), r.old_public.clone()]);
        let after = ServerKeys::load(tmp.path()).unwrap();
        assert_eq!(after.current.public_hex(), r.new_public);
        assert_eq!(std::fs::read_to_string(tmp.path().join(SERVER_PUB_FILE)).unwrap().trim(), r.new_public);
        assert_eq!(after.accepted(1_000).len(), 2);
        assert_eq!(after.accepted(61_000).len(), 1, "past the deadline only the new key is accepted");

        let again = rotate(tmp.path(), Duration::from_secs(600), 2_000).unwrap();
        assert_eq!(again.accepted.len(), 3, "two rotations within the grace period keep both old keys");
        let keys = ServerKeys::load(tmp.path()).unwrap();
        assert_eq!(keys.retired[1].until_unix_ms, 61_000, "an earlier deadline is kept");
        assert_eq!(keys.accepted(100_000).len(), 2);
        let last = rotate(tmp.path(), Duration::ZERO, 70_000).unwrap();
        assert_eq!(last.accepted, vec![last.new_public.clone()], "expired keys are dropped, grace 0 keeps none");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join(RETIRED_KEYS_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_retired_file_is_an_error_naming_it_without_key_bytes() {
        let tmp = data_dir();
        rotate(tmp.path(), Duration::from_secs(60), 0).unwrap();
        let path = tmp.path().join(RETIRED_KEYS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let secret_hex = text.lines().nth(1).unwrap().split(' ').next().unwrap().to_string();
        for bad in [text.replace(" 60000", ""), text.replace("v1", "v9"), text.replace(&secret_hex[..4], "zzzz")] {
            std::fs::write(&path, &bad).unwrap();
            let err = ServerKeys::load(tmp.path()).unwrap_err().to_string();
            assert!(err.contains(RETIRED_KEYS_FILE), "{err}");
            assert!(!err.contains(&secret_hex[4..]), "{err}");
        }
    }
}
