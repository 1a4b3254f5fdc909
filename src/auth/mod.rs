//! Who may connect: tokens, their argon2id hashes, and verification.
//!
//! A token is `cmt_<id>_<secret>` ([`token`]). The server keeps only an
//! argon2id hash per id ([`table`]), so one AUTH costs exactly one argon2
//! verification, whatever the number of tokens. Verification runs on the
//! blocking thread pool, never on the async reactor, and at most
//! `max_concurrent` run at once so a flood of AUTH attempts cannot take every
//! core. An unknown id is verified against a dummy hash with the same cost, so
//! the answer and its timing do not reveal whether an id exists.

pub mod hash;
pub mod table;
pub mod token;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

pub use hash::{HashParams, hash_secret, verify_secret};
pub use table::{Role, TableError, TokenRecord, TokenTable};
pub use token::{MalformedToken, Token};

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// Its role.
    pub role: Role,
}

/// Why AUTH failed. Deliberately coarse: clients learn only "invalid token".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong, unknown or malformed token.
    #[error("invalid token")]
    InvalidToken,
    /// The verification task failed (server-side problem).
    #[error("token verification is unavailable")]
    Unavailable,
}

/// Verifies AUTH tokens against the current table.
#[derive(Debug)]
pub struct Authenticator {
    table: ArcSwap<TokenTable>,
    permits: Arc<Semaphore>,
    dummy_hash: String,
}

impl Authenticator {
    /// An authenticator over `table` allowing `max_concurrent` argon2 runs at once.
    ///
    /// # Errors
    /// [`hash::HashError`] if the dummy hash cannot be made with `params`.
    pub fn new(table: TokenTable, max_concurrent: usize, params: HashParams) -> Result<Self, hash::HashError> {
        Ok(Self {
            table: ArcSwap::from_pointee(table),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy_hash: hash_secret("cryptomem-dummy-secret", params)?,
        })
    }

    /// Replaces the table (tokens added or revoked) without a restart.
    pub fn replace_table(&self, table: TokenTable) {
        self.table.store(Arc::new(table));
    }

    /// Checks a token presented with AUTH.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for anything but a valid token.
    pub async fn authenticate(&self, presented: &[u8]) -> Result<Principal, AuthError> {
        let parsed = std::str::from_utf8(presented).ok().and_then(|t| Token::parse(t).ok());
        let table = self.table.load_full();
        let record = parsed.as_ref().and_then(|t| table.get(t.id()).cloned());
        let secret = parsed.as_ref().map_or_else(String::new, |t| t.secret().to_string());
        let phc = record.as_ref().map_or_else(|| self.dummy_hash.clone(), |r| r.hash.clone());
        let _permit = self.permits.acquire().await.map_err(|_| AuthError::Unavailable)?;
        let secret = zeroize::Zeroizing::new(secret);
        let matched = tokio::task::spawn_blocking(move || verify_secret(&secret, &phc))
            .await
            .map_err(|_| AuthError::Unavailable)?;
        match record {
            Some(r) if matched => Ok(Principal { token_id: r.id, role: r.role }),
            _ => Err(AuthError::InvalidToken),
        }
    }
}
