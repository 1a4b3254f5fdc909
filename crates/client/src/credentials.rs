//! The client credentials file: where the server is, its public key, a token.
//!
//! TOML, mode 0600 (it holds a token):
//!
//! ```toml
//! format = "cryptomem-credentials"
//! version = 1
//! server = "127.0.0.1:7379"
//! server_public_key = "<64 hex digits>"
//! token = "cmt_<id>_<secret>"
//! # optional, after a server key rotation:
//! previous_server_public_keys = ["<64 hex digits>"]
//! ```
//!
//! | key | meaning |
//! |-----|---------|
//! | `format` | always `"cryptomem-credentials"` |
//! | `version` | 1; other versions are refused |
//! | `server` | `host:port` to connect to (a wildcard listen address is written as loopback) |
//! | `server_public_key` | the server's X25519 public key, 64 hex digits (as in `server.pub`): the key the client pins for the Noise NK handshake |
//! | `token` | the access token, `cmt_<12 hex id>_<64 hex secret>` ([`cryptomem_wire::Token`]), sent as is (UTF-8) as AUTH's value |
//! | `previous_server_public_keys` | optional list of further pinned keys (64 hex digits each), tried in order when the server refuses the handshake to `server_public_key` (handshake rejection reason 2): the keys a rotation's grace period still accepts |
//!
//! The first five are required and unknown keys are errors. `cryptomem serve`
//! writes `credentials.toml` into a new data dir with the first admin token;
//! the CLI and [`crate::Client::from_credentials_file`] read it.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use x25519_dalek::PublicKey;

use crate::secure::{parse_public_key, public_key_hex};
use cryptomem_util::files::{PRIVATE_MODE, write_atomic};
use cryptomem_wire::Token;

const FORMAT: &str = "cryptomem-credentials";
const VERSION: u32 = 1;

/// Everything a client needs to connect and authenticate.
#[derive(Clone)]
pub struct Credentials {
    /// `host:port` of the server.
    pub server: String,
    /// The server's static public key, pinned.
    pub server_public_key: PublicKey,
    /// The access token.
    pub token: Token,
    /// Further pinned keys, tried in order after `server_public_key`.
    pub previous_server_public_keys: Vec<PublicKey>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("server_public_key", &public_key_hex(&self.server_public_key))
            .field("token", &self.token)
            .field(
                "previous_server_public_keys",
                &self.previous_server_public_keys.iter().map(public_key_hex).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    format: String,
    version: u32,
    server: String,
    server_public_key: String,
    token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    previous_server_public_keys: Vec<String>,
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("credentials file {}: {reason}", path.display())]
pub struct CredentialsError {
    path: std::path::PathBuf,
    reason: String,
}

impl CredentialsError {
    pub(crate) fn new(path: &Path, reason: String) -> Self {
        Self { path: path.to_path_buf(), reason }
    }
}

impl Credentials {
    /// Reads a credentials file.
    ///
    /// # Errors
    /// [`CredentialsError`] naming the file and the problem (never the token).
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let err = |reason: String| CredentialsError { path: path.to_path_buf(), reason };
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let form: FileForm = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
        if form.format != FORMAT || form.version != VERSION {
            return Err(err(format!("expected format `{FORMAT}` version {VERSION}")));
        }
        Ok(Self {
            server: form.server,
            server_public_key: parse_public_key(&form.server_public_key).map_err(|e| err(e.to_string()))?,
            token: Token::parse(&form.token).map_err(|e| err(e.to_string()))?,
            previous_server_public_keys: form
                .previous_server_public_keys
                .iter()
                .map(|k| parse_public_key(k))
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("previous_server_public_keys: {e}")))?,
        })
    }

    /// Writes the file atomically with mode 0600.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let form = FileForm {
            format: FORMAT.into(),
            version: VERSION,
            server: self.server.clone(),
            server_public_key: public_key_hex(&self.server_public_key),
            token: self.token.expose().to_string(),
            previous_server_public_keys: self.previous_server_public_keys.iter().map(public_key_hex).collect(),
        };
        let text = zeroize::Zeroizing::new(toml::to_string(&form).unwrap_or_default());
        write_atomic(path, text.as_bytes(), PRIVATE_MODE)
    }
}
