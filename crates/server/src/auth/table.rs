//! The token table file, `tokens.toml` in the data dir (mode 0600).
//!
//! ```toml
//! format = "cryptomem-tokens"
//! version = 1
//!
//! [[token]]
//! id = "3f9a0c11d2e4"                      # 12 hex digits, the token's public id
//! hash = "$argon2id$v=19$m=19456,t=2,p=1$..." # PHC hash of the secret part
//! role = "admin"                           # read | write | admin
//! prefixes = []                            # if non-empty, every key must start with one of these
//! label = "initial admin token"
//! created_unix_ms = 1763800000000
//! ```
//!
//! The secret itself is never stored. Unknown fields are rejected so a typo
//! cannot silently weaken a token.

use std::path::{Path, PathBuf};

use cryptomem_wire::{Role, TokenInfo, TokenListing};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "cryptomem-tokens";
const VERSION: u32 = 1;

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id (the `<id>` of `cmt_<id>_<secret>`).
    pub id: String,
    /// Argon2id PHC hash of the secret.
    pub hash: String,
    /// Permissions.
    pub role: Role,
    /// Key prefixes the token is limited to; empty means every key.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Free text for humans.
    #[serde(default)]
    pub label: String,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
}

/// All tokens a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTable {
    format: String,
    version: u32,
    #[serde(default, rename = "token")]
    tokens: Vec<TokenRecord>,
}

/// The token file could not be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Reading or writing failed.
    #[error("token table {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a token table this build understands.
    #[error("token table {}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl TokenTable {
    /// An empty table.
    pub fn new() -> Self {
        Self { format: FORMAT.into(), version: VERSION, tokens: Vec::new() }
    }

    /// Parses the file text.
    ///
    /// # Errors
    /// [`TableError::Format`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, TableError> {
        let format_err = |reason: String| TableError::Format { path: path.to_path_buf(), reason };
        let table: Self = toml::from_str(text).map_err(|e| format_err(e.message().to_string()))?;
        if table.format != FORMAT {
            return Err(format_err(format!("format is `{}`, expected `{FORMAT}`", table.format)));
        }
        if table.version != VERSION {
            return Err(format_err(format!("version {} is not supported (this build reads {VERSION})", table.version)));
        }
        Ok(table)
    }

    /// Reads the table from `path`.
    ///
    /// # Errors
    /// [`TableError`].
    pub fn load(path: &Path) -> Result<Self, TableError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TableError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// The file text.
    pub fn to_toml(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Adds a record.
    pub fn insert(&mut self, record: TokenRecord) {
        self.tokens.retain(|t| t.id != record.id);
        self.tokens.push(record);
    }

    /// The record with `id`.
    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.iter().find(|t| t.id == id)
    }

    /// All records.
    pub fn records(&self) -> &[TokenRecord] {
        &self.tokens
    }

    /// Removes the record with `id`; returns whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        self.tokens.len() != before
    }

    /// Writes the table atomically with mode 0600.
    ///
    /// # Errors
    /// [`TableError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), TableError> {
        cryptomem_util::files::write_atomic(path, self.to_toml().as_bytes(), cryptomem_util::files::PRIVATE_MODE)
            .map_err(|source| TableError::Io { path: path.to_path_buf(), source })
    }
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        Self {
            id: r.id.clone(),
            role: r.role,
            prefixes: r.prefixes.clone(),
            label: r.label.clone(),
            created_unix_ms: r.created_unix_ms,
        }
    }
}

/// Encodes the TOKEN LIST reply for `records`.
pub fn listing_toml(records: &[TokenRecord]) -> String {
    toml::to_string(&TokenListing { token: records.iter().map(TokenInfo::from).collect() }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_checks() {
        let mut t = TokenTable::new();
        t.insert(TokenRecord {
            id: "0123456789ab".into(),
            hash: "$argon2id$x".into(),
            role: Role::Admin,
            prefixes: vec!["app:".into()],
            label: "l".into(),
            created_unix_ms: 5,
        });
        let text = t.to_toml();
        let p = Path::new("tokens.toml");
        assert_eq!(TokenTable::parse(&text, p).unwrap(), t);
        assert!(
            TokenTable::parse(&text.replace("version = 1", "version = 2"), p)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(TokenTable::parse(&text.replace("cryptomem-tokens", "x"), p).is_err());
        assert!(TokenTable::parse(&text.replace("role = \"admin\"", "role = \"root\""), p).is_err());
        assert!(TokenTable::parse("garbage", p).is_err());
    }
}
