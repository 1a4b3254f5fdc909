//! The data directory: what it holds and how a new one is initialised.
//!
//! | file               | mode | contents                                             |
//! |--------------------|------|------------------------------------------------------|
//! | `server.key`       | 0600 | the server's X25519 private key ([`crate::secure::identity`]) |
//! | `server.pub`       | 0644 | its public key, 64 hex digits: what clients pin      |
//! | `server-retired.key` | 0600 | keys replaced by a rotation, accepted until a deadline ([`super::server_keys`]) |
//! | `tokens.toml`      | 0600 | argon2id hashes of the access tokens ([`crate::auth::table`]) |
//! | `credentials.toml` | 0600 | server address, public key and the first admin token, for the CLI (the client crate's `credentials`) |
//! | `LOCK`             | 0600 | empty; a running server holds an exclusive lock on it |
//! | `log-*.cml`, `snapshot-*.cms` | 0600 | the keyspace ([`crate::persist`]) |
//!
//! A directory without `tokens.toml` is new: it is initialised (an existing
//! valid `server.key` is kept, so a pinned key stays valid), `tokens.toml` is
//! written last, and a crash during initialisation is simply redone at the next
//! start. Every file is written atomically (temp file, fsync, rename, directory fsync).

use std::path::{Path, PathBuf};

use super::server_keys::ServerKeys;
use crate::auth::{HashParams, Role, Token, TokenRecord, TokenTable, hash_secret};
use crate::secure::ServerIdentity;
use cryptomem_util::files::{PRIVATE_MODE, PUBLIC_MODE, create_private_dir, write_atomic};

/// `server.key`.
pub const SERVER_KEY_FILE: &str = "server.key";
/// `server.pub`.
pub const SERVER_PUB_FILE: &str = "server.pub";
/// `tokens.toml`.
pub const TOKENS_FILE: &str = "tokens.toml";
/// `credentials.toml`.
pub const CREDENTIALS_FILE: &str = "credentials.toml";
/// `LOCK`.
pub const LOCK_FILE: &str = "LOCK";

/// A data dir that could not be opened or initialised.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("data dir {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server key is unreadable.
    #[error(transparent)]
    Key(#[from] crate::secure::SecureError),
    /// The token table is unreadable.
    #[error(transparent)]
    Tokens(#[from] crate::auth::TableError),
    /// The first admin token's secret could not be drawn.
    #[error("cannot create the first admin token: the random source failed: {0}")]
    Random(#[source] getrandom::Error),
    /// The first admin token could not be hashed.
    #[error(transparent)]
    Hash(#[from] crate::auth::HashError),
    /// Another process holds the data dir.
    #[error("data dir {} is in use by another cryptomem process (it holds {}/LOCK)", .0.display(), .0.display())]
    Locked(PathBuf),
}

/// Takes the exclusive lock on `root`'s `LOCK` file; held until the file is dropped.
///
/// # Errors
/// [`DataDirError::Locked`] if another process holds it, I/O errors otherwise.
pub fn lock_data_dir(root: &Path) -> Result<std::fs::File, DataDirError> {
    let path = root.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_MODE);
    let file = options.open(&path).map_err(io_err(&path))?;
    // A LOCK created by an older version may be 0644.
    cryptomem_util::files::set_mode(&path, PRIVATE_MODE).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::Locked(root.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    keys: ServerKeys,
    tokens: TokenTable,
    _lock: std::fs::File,
}

/// What initialising a new data dir created; the token is shown to the user once.
#[derive(Debug)]
pub struct InitReport {
    /// The first admin token, in full.
    pub admin_token: Token,
    /// Whether `server.key` was generated now (false: an existing one was kept).
    pub new_server_key: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

impl DataDir {
    /// Opens `root`, initialising it first if it has no token table.
    ///
    /// # Errors
    /// [`DataDirError`] naming the file at fault.
    pub fn open_or_init(root: &Path, params: HashParams) -> Result<(Self, Option<InitReport>), DataDirError> {
        create_private_dir(root).map_err(io_err(root))?;
        let lock = lock_data_dir(root)?;
        let key_path = root.join(SERVER_KEY_FILE);
        let tokens_path = root.join(TOKENS_FILE);
        if tokens_path.exists() {
            let keys = ServerKeys::load(root)?;
            let tokens = TokenTable::load(&tokens_path)?;
            return Ok((Self { root: root.to_path_buf(), keys, tokens, _lock: lock }, None));
        }

        let (identity, new_server_key) = match ServerIdentity::load(&key_path) {
            Ok(existing) => (existing, false),
            Err(_) => (ServerIdentity::generate()?, true),
        };
        if new_server_key {
            write_atomic(&key_path, identity.to_key_file().as_bytes(), PRIVATE_MODE).map_err(io_err(&key_path))?;
        }
        let pub_path = root.join(SERVER_PUB_FILE);
        write_atomic(&pub_path, format!("{}\n", identity.public_hex()).as_bytes(), PUBLIC_MODE)
            .map_err(io_err(&pub_path))?;

        let admin_token = Token::generate().map_err(DataDirError::Random)?;
        let mut tokens = TokenTable::new();
        tokens.insert(TokenRecord {
            id: admin_token.id().to_string(),
            hash: hash_secret(admin_token.secret(), params)?,
            role: Role::Admin,
            prefixes: Vec::new(),
            label: "initial admin token".into(),
            created_unix_ms: crate::store::Clock::System.now_ms(),
        });
        write_atomic(&tokens_path, tokens.to_toml().as_bytes(), PRIVATE_MODE).map_err(io_err(&tokens_path))?;
        let keys = ServerKeys { current: identity, retired: Vec::new() };
        let dir = Self { root: root.to_path_buf(), keys, tokens, _lock: lock };
        Ok((dir, Some(InitReport { admin_token, new_server_key })))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's current key pair.
    pub fn identity(&self) -> &ServerIdentity {
        &self.keys.current
    }

    /// The current key and the retired ones (as read at open).
    pub fn keys(&self) -> &ServerKeys {
        &self.keys
    }

    /// The token table as loaded.
    pub fn tokens(&self) -> &TokenTable {
        &self.tokens
    }

    /// Path of the credentials file.
    pub fn credentials_path(&self) -> PathBuf {
        self.root.join(CREDENTIALS_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> HashParams {
        HashParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 }
    }

    #[test]
    fn init_then_reopen_keeps_identity_and_tokens() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let (dir, report) = DataDir::open_or_init(&root, cheap()).unwrap();
        let report = report.expect("new dir is initialised");
        assert!(report.new_server_key);
        let record = dir.tokens().get(report.admin_token.id()).unwrap();
        assert!(crate::auth::verify_secret(report.admin_token.secret(), &record.hash));
        let tokens_text = std::fs::read_to_string(root.join(TOKENS_FILE)).unwrap();
        assert!(!tokens_text.contains(report.admin_token.secret()), "secret must not be stored");
        let (public, tokens) = (dir.identity().public_hex(), dir.tokens().clone());
        drop(dir);

        let (again, none) = DataDir::open_or_init(&root, cheap()).unwrap();
        assert!(none.is_none());
        assert_eq!(again.identity().public_hex(), public);
        assert_eq!(again.tokens(), &tokens);
    }

    #[test]
    fn interrupted_init_keeps_the_key_and_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        let public = DataDir::open_or_init(tmp.path(), cheap()).unwrap().0.identity().public_hex();
        std::fs::remove_file(tmp.path().join(TOKENS_FILE)).unwrap();
        let (again, report) = DataDir::open_or_init(tmp.path(), cheap()).unwrap();
        assert!(!report.unwrap().new_server_key);
        assert_eq!(again.identity().public_hex(), public);
    }

    #[test]
    fn a_second_opener_is_locked_out_until_the_first_closes() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, _) = DataDir::open_or_init(tmp.path(), cheap()).unwrap();
        assert!(matches!(DataDir::open_or_init(tmp.path(), cheap()), Err(DataDirError::Locked(_))));
        drop(first);
        DataDir::open_or_init(tmp.path(), cheap()).unwrap();
    }

    #[test]
    fn corrupt_key_file_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        DataDir::open_or_init(tmp.path(), cheap()).unwrap();
        std::fs::write(tmp.path().join(SERVER_KEY_FILE), "garbage").unwrap();
        let err = DataDir::open_or_init(tmp.path(), cheap()).unwrap_err().to_string();
        assert!(err.contains("server.key"), "{err}");
    }
}
