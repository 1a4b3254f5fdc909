//! Who may connect and what they may do: tokens, their argon2id hashes,
//! verification, roles and prefixes, brute-force throttling.
//!
//! A token is `cmt_<id>_<secret>` ([`Token`]). The server keeps only an
//! argon2id hash per id ([`TokenTable`]), so one AUTH costs at most one argon2
//! verification, whatever the number of tokens. Verification runs on the
//! blocking thread pool, never on the async reactor, and at most
//! `max_concurrent` run at once, which bounds the share of CPU AUTH can take.
//!
//! After a token verified once, the server remembers an HMAC-SHA256 of its
//! secret under a random per-process key, so a reconnecting client skips
//! argon2 (compared in constant time). Failures never take that shortcut:
//! every failed AUTH costs exactly one argon2 run, against the token's hash or
//! a dummy hash for an unknown id, so the answer and its cost are the same
//! whether the id exists or not. Failures are also delayed and counted per
//! address ([`Throttle`]).
//!
//! The table is live: tokens added or revoked online, or by editing
//! `tokens.toml` offline (picked up within a second), apply to new AUTHs at
//! once and to open connections at their next request ([`Authenticator::generation`]).

mod hash;
mod permissions;
pub(crate) mod table;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

pub use cryptomem_wire::{Role, UnknownRole};
pub use hash::{HashError, HashParams, hash_secret, verify_secret};
pub use permissions::{Denied, Principal};
pub use table::{TableError, TokenRecord, TokenTable};
pub use throttle::{Attempt, Throttle, ThrottleConfig};

/// How often an AUTH waiting for its address's budget looks again.
const BUDGET_POLL: Duration = Duration::from_millis(10);

/// A place in an address's attempt budget. Dropped unfinished (the session
/// gave up waiting, the connection went away) it is only released: the
/// client got no verdict, so it learned nothing.
struct Reservation<'a> {
    throttle: &'a Throttle,
    peer: IpAddr,
    done: bool,
}

impl Reservation<'_> {
    fn succeeded(mut self) {
        self.done = true;
        self.throttle.record_success(self.peer, true);
    }

    fn failed(mut self) -> Option<Duration> {
        self.done = true;
        self.throttle.record_failure(self.peer)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.release(self.peer);
        }
    }
}
pub use cryptomem_wire::{MalformedToken, Token};

use cryptomem_util::clock::Clock;

/// Why AUTH failed. Deliberately coarse: clients learn only "invalid token".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong, unknown, revoked or malformed token.
    #[error("invalid token")]
    InvalidToken,
    /// Too many failures from this address.
    #[error("too many failed AUTH attempts from this address; retry in {}s", .0.as_secs().max(1))]
    LockedOut(Duration),
    /// The verification task failed (server-side problem).
    #[error("token verification is unavailable")]
    Unavailable,
}

/// A token-management request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Reading or writing `tokens.toml` failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Hashing failed or the arguments are unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Authentication settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// argon2 verifications running at once.
    pub max_concurrent: usize,
    /// Cost of hashes for new tokens.
    pub hash: HashParams,
    /// Remember verified tokens so reconnects skip argon2.
    pub cache: bool,
    /// Brute-force limits.
    pub throttle: ThrottleConfig,
}

/// Counters for INFO.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Successful AUTHs answered from the verifier cache.
    pub cache_hits: AtomicU64,
    /// argon2 verifications run.
    pub argon2_runs: AtomicU64,
    /// Failed AUTHs.
    pub failures: AtomicU64,
    /// AUTHs refused because the address was locked out.
    pub refused_locked: AtomicU64,
}

/// Verifies AUTH tokens and manages the live token table.
pub struct Authenticator {
    table: ArcSwap<TokenTable>,
    generation: AtomicU64,
    file: Option<PathBuf>,
    file_stamp: Mutex<Option<(SystemTime, u64)>>,
    editing: tokio::sync::Mutex<()>,
    permits: Arc<Semaphore>,
    dummy_hash: String,
    config: AuthConfig,
    cache_key: [u8; 32],
    cache: Mutex<HashMap<String, ([u8; 32], String)>>,
    throttle: Throttle,
    clock: Clock,
    /// Counters for INFO.
    pub stats: AuthStats,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("tokens", &self.table.load().records().len()).finish_non_exhaustive()
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Authenticator {
    /// An authenticator over `table`; `file` is where the table lives (for
    /// online changes and offline edits), `None` for a table only in memory.
    ///
    /// # Errors
    /// [`hash::HashError`] if the dummy hash cannot be made with the configured cost.
    pub fn new(
        table: TokenTable,
        file: Option<PathBuf>,
        config: AuthConfig,
        clock: Clock,
    ) -> Result<Self, hash::HashError> {
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key).map_err(|e| hash::HashError::new(e.to_string()))?;
        let stamp = file.as_deref().and_then(file_stamp);
        Ok(Self {
            table: ArcSwap::from_pointee(table),
            generation: AtomicU64::new(0),
            file,
            file_stamp: Mutex::new(stamp),
            editing: tokio::sync::Mutex::new(()),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            dummy_hash: hash_secret("cryptomem-dummy-secret", config.hash)?,
            config,
            cache_key,
            cache: Mutex::new(HashMap::new()),
            throttle: Throttle::new(config.throttle, clock.clone()),
            clock,
            stats: AuthStats::default(),
        })
    }

    /// Bumped whenever the table changes; sessions re-check their token then.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The throttle (for INFO).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Number of tokens.
    pub fn token_count(&self) -> usize {
        self.table.load().records().len()
    }

    fn principal(record: &TokenRecord) -> Principal {
        Principal {
            token_id: record.id.clone(),
            role: record.role,
            prefixes: record.prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    /// The current rights of `token_id`, `None` once it is revoked.
    pub fn principal_for(&self, token_id: &str) -> Option<Principal> {
        self.table.load().get(token_id).map(Self::principal)
    }

    fn mac(&self, secret: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.cache_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, ([u8; 32], String)>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a token presented with AUTH from `peer`.
    ///
    /// # Errors
    /// [`AuthError::LockedOut`] while `peer` is locked out (no verification is
    /// run), [`AuthError::InvalidToken`] for anything but a valid token.
    pub async fn authenticate(&self, presented: &[u8], peer: IpAddr) -> Result<Principal, AuthError> {
        if let Err(left) = self.throttle.check(peer) {
            self.stats.refused_locked.fetch_add(1, Ordering::Relaxed);
            return Err(AuthError::LockedOut(left));
        }
        let parsed = std::str::from_utf8(presented).ok().and_then(|t| Token::parse(t).ok());
        let table = self.table.load_full();
        let record = parsed.as_ref().and_then(|t| table.get(t.id()).cloned());
        let secret = zeroize::Zeroizing::new(parsed.as_ref().map_or_else(String::new, |t| t.secret().to_string()));

        if self.config.cache
            && let Some(record) = &record
        {
            let cached = self.cache().get(&record.id).filter(|(_, hash)| *hash == record.hash).map(|(mac, _)| *mac);
            if let Some(expected) = cached
                && bool::from(self.mac(&secret).ct_eq(&expected))
            {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                self.throttle.record_success(peer, false);
                return Ok(Self::principal(record));
            }
        }

        // A verification holds a place in the address's budget from now on,
        // so parallel guesses cannot outrun the lockout; beyond the budget an
        // attempt waits for one in flight to finish (the session bounds the
        // wait by the AUTH deadline and answers BUSY).
        loop {
            match self.throttle.begin_attempt(peer) {
                Ok(()) => break,
                Err(Attempt::Locked(left)) => {
                    self.stats.refused_locked.fetch_add(1, Ordering::Relaxed);
                    return Err(AuthError::LockedOut(left));
                }
                Err(Attempt::Wait) => tokio::time::sleep(BUDGET_POLL).await,
            }
        }
        let reservation = Reservation { throttle: &self.throttle, peer, done: false };
        let phc = record.as_ref().map_or_else(|| self.dummy_hash.clone(), |r| r.hash.clone());
        let permit = self.permits.acquire().await.map_err(|_| AuthError::Unavailable)?;
        self.stats.argon2_runs.fetch_add(1, Ordering::Relaxed);
        let check = secret.clone();
        let matched = tokio::task::spawn_blocking(move || verify_secret(&check, &phc))
            .await
            .map_err(|_| AuthError::Unavailable)?;
        drop(permit);
        match record {
            Some(r) if matched => {
                if self.config.cache {
                    let mac = self.mac(&secret);
                    self.cache().insert(r.id.clone(), (mac, r.hash.clone()));
                }
                reservation.succeeded();
                Ok(Self::principal(&r))
            }
            _ => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(lockout) = reservation.failed() {
                    tracing::warn!(%peer, lockout_s = lockout.as_secs(), "too many failed AUTH attempts: address locked out");
                }
                tokio::time::sleep(self.config.throttle.failure_delay).await;
                Err(AuthError::InvalidToken)
            }
        }
    }

    fn install(&self, table: TokenTable) {
        let ids: std::collections::HashSet<&str> = table.records().iter().map(|r| r.id.as_str()).collect();
        self.cache().retain(|id, _| ids.contains(id.as_str()));
        self.table.store(Arc::new(table));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Reloads `tokens.toml` if it changed on disk since the last look.
    /// Returns whether it did.
    ///
    /// # Errors
    /// [`TableError`] if the changed file is unreadable; the old table stays.
    pub fn reload_if_changed(&self) -> Result<bool, TableError> {
        let Some(path) = &self.file else { return Ok(false) };
        let stamp = file_stamp(path);
        {
            let mut seen = self.file_stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        let table = TokenTable::load(path)?;
        if table != **self.table.load() {
            self.install(table);
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads the newest table (the file may have been edited offline), applies
    /// `change`, saves and installs the result.
    async fn edit<R>(&self, change: impl FnOnce(&mut TokenTable) -> R) -> Result<R, ManageError> {
        let _one_at_a_time = self.editing.lock().await;
        let mut table = match &self.file {
            Some(path) => TokenTable::load(path)?,
            None => (**self.table.load()).clone(),
        };
        let result = change(&mut table);
        if let Some(path) = &self.file {
            table.save(path)?;
            *self.file_stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = file_stamp(path);
        }
        self.install(table);
        Ok(result)
    }

    /// Creates a token; returns it in full (to be shown once).
    ///
    /// # Errors
    /// [`ManageError`] for unusable prefixes or labels, or file errors.
    pub async fn add_token(&self, role: Role, prefixes: Vec<String>, label: String) -> Result<Token, ManageError> {
        let token = Token::generate().map_err(|e| ManageError::Invalid(format!("random source failed: {e}")))?;
        let record = new_record(&token, role, prefixes, label, self.config.hash, self.clock.now_ms()).await?;
        self.edit(|t| t.insert(record)).await?;
        Ok(token)
    }

    /// Revokes a token; returns whether it existed.
    ///
    /// # Errors
    /// [`ManageError`] for file errors.
    pub async fn revoke(&self, token_id: &str) -> Result<bool, ManageError> {
        self.edit(|t| t.remove(token_id)).await
    }

    /// The current records.
    pub fn list(&self) -> Vec<TokenRecord> {
        self.table.load().records().to_vec()
    }
}

/// Builds a table record for `token`, hashing its secret off the reactor.
///
/// # Errors
/// [`ManageError::Invalid`] for an empty prefix, a control character in a
/// label, or parameters argon2 refuses.
pub async fn new_record(
    token: &Token,
    role: Role,
    prefixes: Vec<String>,
    label: String,
    params: HashParams,
    now_ms: u64,
) -> Result<TokenRecord, ManageError> {
    if prefixes.iter().any(String::is_empty) {
        return Err(ManageError::Invalid("a key prefix must not be empty".into()));
    }
    if label.chars().any(char::is_control) || label.len() > 200 {
        return Err(ManageError::Invalid("a label is at most 200 characters, without control characters".into()));
    }
    let secret = zeroize::Zeroizing::new(token.secret().to_string());
    let hash = tokio::task::spawn_blocking(move || hash_secret(&secret, params))
        .await
        .map_err(|e| ManageError::Invalid(e.to_string()))?
        .map_err(|e| ManageError::Invalid(e.to_string()))?;
    Ok(TokenRecord { id: token.id().to_string(), hash, role, prefixes, label, created_unix_ms: now_ms })
}
