//! The TOKEN LIST reply body: UTF-8 TOML, one `[[token]]` table per token,
//! with `id`, `role`, `prefixes`, `label` and `created_unix_ms` (never a hash
//! or a secret).

use serde::{Deserialize, Serialize};

use crate::Role;

/// One token as TOKEN LIST shows it: the server's token record without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Key prefixes (empty: every key).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Creation time, Unix ms.
    pub created_unix_ms: u64,
}

/// The TOKEN LIST reply body: `[[token]]` TOML tables of [`TokenInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenListing {
    /// The tokens.
    #[serde(default)]
    pub token: Vec<TokenInfo>,
}
