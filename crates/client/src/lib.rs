//! The cryptomem client: async, pipelined, with client-side value sealing.
//!
//! It depends only on the wire crate (protocol and secure channel) and a few
//! small utilities: adding it to an application compiles none of the
//! server's dependencies. Passphrase-derived value keys (Argon2id) are
//! behind the `passphrase` feature.
//!
//! A [`Client`] is `Clone + Send + Sync`; clones share its encrypted
//! connections ([`ClientConfig::connections`], default
//! [`DEFAULT_CONNECTIONS`], opened as they are first used), over which
//! requests from any number of tasks are pipelined (responses are matched in
//! order; one call's requests, and a [`Pipeline`]'s, always share one
//! connection and run in order, while calls made concurrently may run in
//! any order). If a connection drops, calls in flight on it fail with
//! [`Error::ConnectionLost`] and a later call reconnects, with a bounded
//! exponential backoff between failed attempts ([`Backoff`]).
//!
//! Values passed to [`Client::set`] and read by [`Client::get`] are sealed and
//! opened with the client's [`Keyring`] ([`crate::value_crypto`]); the server
//! only stores ciphertext bound to its key name. The `*_raw` methods move bytes
//! unchanged, for tools and for data that is already protected.
//!
//! ```no_run
//! use cryptomem_client::{Client, value_crypto::{Keyring, ValueKey}};
//! use std::time::Duration;
//!
//! # async fn demo() -> cryptomem_client::Result<()> {
//! let keyring = Keyring::new(ValueKey::load("value.key".as_ref())?);
//! let client = Client::from_credentials_file("data/credentials.toml".as_ref(), Some(keyring)).await?;
//! client.set("greeting", b"hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! client.set_with("session", b"token", cryptomem_client::SetOptions::ttl(Duration::from_secs(60))).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The crate README's example is compiled with the doctests, so it cannot
// drift from the API it shows.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod connection;
pub mod credentials;
mod error;
pub mod hidden_names;
mod pipeline;
mod pool;
mod scan;
pub mod sharded;
pub mod value_crypto;
mod versions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use x25519_dalek::PublicKey;

use connection::{ConnectParams, Pending, Reply};
pub use credentials::{Credentials, CredentialsError};
pub use error::{Error, Result};
pub use hidden_names::HiddenNames;
pub use pipeline::{Pipeline, PipelineReply};
pub use pool::Backoff;
pub use scan::{DEFAULT_PAGE_SIZE, Scan};
pub use sharded::{Failover, ShardedClient, ShardedConfig};
pub use versions::UPDATE_ATTEMPTS;

use crate::value_crypto::Keyring;
use cryptomem_wire::TokenListing;
use cryptomem_wire::protocol;
use cryptomem_wire::secure;
pub use cryptomem_wire::{Role, Token, TokenInfo};
use protocol::{HARD_MAX_VALUE_LEN, Request, Response, SetCondition, Status, encode_request};

/// How to reach and authenticate to a server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port`.
    pub server: String,
    /// The server's pinned static public key.
    pub server_public_key: PublicKey,
    /// Further pinned keys, tried in order when the server refuses the
    /// handshake to `server_public_key` (during a server key rotation).
    pub previous_server_public_keys: Vec<PublicKey>,
    /// Access token.
    pub token: Token,
    /// Value keys; `None` allows only the `*_raw` calls.
    pub keyring: Option<Keyring>,
    /// Limit on TCP connect plus handshake (default 10 s).
    pub connect_timeout: Duration,
    /// Limit on each request's round trip (default 30 s).
    pub request_timeout: Duration,
    /// Largest response body accepted (default 512 MiB + 1 MiB).
    pub max_response_len: usize,
    /// Send keyed hashes instead of key names (see [`hidden_names`]); off by default.
    pub hidden_names: Option<HiddenNames>,
    /// Connections to spread requests over (default [`DEFAULT_CONNECTIONS`]).
    pub connections: usize,
    /// Waits between failed connection attempts.
    pub reconnect_backoff: Backoff,
}

/// Connections a [`Client`] opens at most by default. Measured on 2 cores
/// (README, "Client connections"): more than one lets a busy client use
/// more than one server thread.
pub const DEFAULT_CONNECTIONS: usize = 4;

impl ClientConfig {
    /// A configuration with default timeouts and no value keys.
    pub fn new(server: impl Into<String>, server_public_key: PublicKey, token: Token) -> Self {
        Self {
            server: server.into(),
            server_public_key,
            previous_server_public_keys: Vec::new(),
            token,
            keyring: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_len: HARD_MAX_VALUE_LEN + (1 << 20),
            hidden_names: None,
            connections: DEFAULT_CONNECTIONS,
            reconnect_backoff: Backoff::default(),
        }
    }

    /// From a credentials file's contents.
    pub fn from_credentials(c: Credentials) -> Self {
        let mut config = Self::new(c.server, c.server_public_key, c.token);
        config.previous_server_public_keys = c.previous_server_public_keys;
        config
    }

    /// Sets the value keys.
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Every pinned key, in the order they are tried.
    fn pinned_keys(&self) -> Vec<PublicKey> {
        std::iter::once(self.server_public_key).chain(self.previous_server_public_keys.iter().copied()).collect()
    }

    /// Sets how many connections requests are spread over (at least 1).
    #[must_use]
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }

    /// Hides key names from the server (see [`hidden_names`]).
    #[must_use]
    pub fn with_hidden_names(mut self, names: HiddenNames) -> Self {
        self.hidden_names = Some(names);
        self
    }
}

/// Options for [`Client::set_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Expire after this long; `None` never.
    pub ttl: Option<Duration>,
    /// Only write if absent (NX) or present (XX).
    pub condition: SetCondition,
}

impl SetOptions {
    /// Just a TTL.
    pub fn ttl(ttl: Duration) -> Self {
        Self { ttl: Some(ttl), condition: SetCondition::Always }
    }

    /// Write only if the key does not exist (Redis `NX`).
    #[must_use]
    pub fn only_if_absent(mut self) -> Self {
        self.condition = SetCondition::IfAbsent;
        self
    }

    /// Write only if the key exists (Redis `XX`).
    #[must_use]
    pub fn only_if_present(mut self) -> Self {
        self.condition = SetCondition::IfPresent;
        self
    }
}

/// A key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// No such key.
    Missing,
    /// The key never expires.
    Persistent,
    /// The key expires after this long (millisecond precision).
    ExpiresIn(Duration),
}

/// An async, cloneable, pipelining client. See the [module docs](self).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("server", &self.inner.config.server).finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    pinned_keys: Vec<PublicKey>,
    pool: pool::Pool,
}

impl Client {
    /// Connects and authenticates, so configuration mistakes show up here.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Handshake`] (wrong server key, busy), [`Error::Auth`].
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let client = Self::new(config);
        drop(client.connection().await?);
        Ok(client)
    }

    /// A client that connects on its first call, for a program that should
    /// start while the server is down (its calls fail until it is up).
    pub fn new(config: ClientConfig) -> Self {
        let pool = pool::Pool::new(config.connections, config.reconnect_backoff);
        Self { inner: Arc::new(Inner { pinned_keys: config.pinned_keys(), config, pool }) }
    }

    /// The address this client connects to.
    pub fn server(&self) -> &str {
        &self.inner.config.server
    }

    /// Whether the server is known to be unreachable right now: nothing is
    /// connected and the last attempt failed within its backoff wait.
    pub(crate) fn is_down(&self) -> bool {
        self.inner.pool.is_down()
    }

    /// Connects with a credentials file (server, server key, token).
    ///
    /// # Errors
    /// [`Error::Credentials`] plus those of [`Client::connect`].
    pub async fn from_credentials_file(path: &Path, keyring: Option<Keyring>) -> Result<Self> {
        let mut config = ClientConfig::from_credentials(Credentials::load(path)?);
        config.keyring = keyring;
        Self::connect(config).await
    }

    async fn connection(&self) -> Result<pool::Lease<'_>> {
        let cfg = &self.inner.config;
        let params = ConnectParams {
            addr: &cfg.server,
            server_keys: &self.inner.pinned_keys,
            token: &cfg.token,
            connect_timeout: cfg.connect_timeout,
            max_response_len: cfg.max_response_len,
        };
        self.inner.pool.get(&params).await
    }

    /// Connections open right now (at most [`ClientConfig::connections`]).
    pub fn open_connections(&self) -> usize {
        self.inner.pool.open_count()
    }

    /// Sends one request and waits for its response. Server errors come back as
    /// [`Error::Server`]; status 0 and 1 come back as a [`Response`].
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn request(&self, request: &Request) -> Result<Response> {
        let mut frame = Vec::new();
        encode_request(request, &mut frame).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        checked(self.round_trip(frame, Reply::One).await?)
    }

    /// Starts a [`Pipeline`]: commands queued on it go out in one write and
    /// come back together, like a Redis client's pipeline.
    pub fn pipeline(&self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// Sends `count` encoded requests at once; their responses, in order,
    /// and when the first of them was read.
    async fn request_many(&self, frame: Vec<u8>, count: usize) -> Result<connection::Timed> {
        self.round_trip(frame, |tx| Reply::Many { expected: count, got: Vec::with_capacity(count), first_at: None, tx })
            .await
    }

    async fn round_trip<T>(
        &self,
        frame: Vec<u8>,
        reply: impl FnOnce(oneshot::Sender<Result<T>>) -> Reply,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let mut pending = Pending { frame, reply: reply(tx) };
        // A submission refused by a dead connection was never sent: retry it
        // once on a fresh connection.
        for _ in 0..2 {
            // The lease counts the call as in flight on its connection until it returns.
            let lease = self.connection().await?;
            match lease.connection.submit(pending).await {
                Ok(()) => {
                    let timeout = self.inner.config.request_timeout;
                    return tokio::time::timeout(timeout, rx)
                        .await
                        .map_err(|_| Error::Timeout(timeout))?
                        .map_err(|_| Error::ConnectionLost("connection closed".into()))?;
                }
                Err(back) => pending = back,
            }
        }
        Err(Error::ConnectionLost("could not hand the request to a live connection".into()))
    }

    /// The name the server sees for `key`.
    pub(crate) fn wire_key(&self, key: &[u8]) -> Bytes {
        match &self.inner.config.hidden_names {
            Some(names) => names.wire_name(key),
            None => Bytes::copy_from_slice(key),
        }
    }

    fn keyring(&self) -> Result<&Keyring> {
        self.inner.config.keyring.as_ref().ok_or(Error::NoValueKey)
    }

    /// `PING`: a round trip.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn ping(&self) -> Result<()> {
        self.request(&Request::Ping { message: Bytes::new() }).await.map(drop)
    }

    /// Reads and opens a sealed value.
    ///
    /// # Errors
    /// [`Error::ValueCrypto`] if the value does not open under this key name
    /// with this client's keys; [`Error::NoValueKey`]; any other [`Error`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        let keyring = self.keyring()?;
        match self.get_raw(key).await? {
            Some(sealed) => Ok(Some(keyring.open(key, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Seals and stores a value with no TTL.
    ///
    /// # Errors
    /// [`Error::NoValueKey`]; any other [`Error`].
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.set_with(key, value, SetOptions::default()).await.map(drop)
    }

    /// Seals and stores a value with options; returns whether it was written
    /// (false when an NX/XX condition was not met).
    ///
    /// # Errors
    /// [`Error::NoValueKey`]; any other [`Error`].
    pub async fn set_with(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, options: SetOptions) -> Result<bool> {
        let mut frame = Vec::new();
        self.encode_sealed_set(key.as_ref(), value.as_ref(), options, &mut frame)?;
        let response = checked(self.round_trip(frame, Reply::One).await?)?;
        Ok(response.status == Status::Ok)
    }

    /// Appends a SET of `value` sealed for `key` to `out`, the value sealed
    /// straight into the frame (see [`Keyring::seal_into`]). On an error
    /// `out` is as it was.
    pub(crate) fn encode_sealed_set(
        &self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let keyring = self.keyring()?;
        let start = out.len();
        let sealed_len = value_crypto::SEALED_OVERHEAD + value.len();
        protocol::encode_set_head(&self.wire_key(key), sealed_len, options.ttl, options.condition, out)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if let Err(e) = keyring.seal_into(key, value, out) {
            out.truncate(start);
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads the stored bytes without opening them.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn get_raw(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let response = self.request(&Request::Get { key: self.wire_key(key.as_ref()) }).await?;
        Ok((response.status == Status::Ok).then_some(response.body))
    }

    /// Stores bytes as given, without sealing.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn set_raw_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<bool> {
        let request = Request::Set {
            key: self.wire_key(key.as_ref()),
            value: value.into(),
            ttl: options.ttl,
            condition: options.condition,
        };
        Ok(self.request(&request).await?.status == Status::Ok)
    }

    /// Deletes a key; returns whether it existed.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.found(Request::Delete { key: self.wire_key(key.as_ref()) }).await
    }

    /// Whether a key exists.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.found(Request::Exists { key: self.wire_key(key.as_ref()) }).await
    }

    /// Sets a TTL on an existing key; returns whether the key existed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero TTL; any other [`Error`].
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        if ttl.is_zero() {
            return Err(Error::InvalidArgument("EXPIRE needs a TTL above zero; use delete to remove a key".into()));
        }
        self.found(Request::Expire { key: self.wire_key(key.as_ref()), ttl }).await
    }

    /// Removes a key's TTL: `None` if the key is missing, else whether it had one.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<Option<bool>> {
        let r = self.request(&Request::Persist { key: self.wire_key(key.as_ref()) }).await?;
        Ok((r.status == Status::Ok).then(|| r.body.first() == Some(&1)))
    }

    /// A key's remaining time to live.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a malformed reply; any other [`Error`].
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<KeyTtl> {
        let r = self.request(&Request::Ttl { key: self.wire_key(key.as_ref()) }).await?;
        if r.status == Status::NotFound {
            return Ok(KeyTtl::Missing);
        }
        let ns = i64::from_be_bytes(
            r.body.as_ref().try_into().map_err(|_| Error::Protocol("TTL reply is not 8 bytes".into()))?,
        );
        Ok(match u64::try_from(ns) {
            Ok(ns) => KeyTtl::ExpiresIn(Duration::from_nanos(ns)),
            Err(_) => KeyTtl::Persistent,
        })
    }

    /// Reads and opens several values in one round trip.
    ///
    /// # Errors
    /// [`Error::ValueCrypto`] if any value fails to open; any other [`Error`].
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let keyring = self.keyring()?;
        let raw = self.mget_raw(keys).await?;
        keys.iter()
            .zip(raw)
            .map(|(k, v)| v.map(|sealed| keyring.open(k.as_ref(), &sealed)).transpose().map_err(Error::from))
            .collect()
    }

    /// Reads several stored values without opening them.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn mget_raw<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let keys: Vec<Bytes> = keys.iter().map(|k| self.wire_key(k.as_ref())).collect();
        let count = keys.len();
        let r = self.request(&Request::MGet { keys }).await?;
        let items = r.parse_mget().map_err(|e| Error::Protocol(e.to_string()))?;
        if items.len() != count {
            return Err(Error::Protocol(format!("MGET asked for {count} keys, got {}", items.len())));
        }
        Ok(items)
    }

    /// Seals and stores several values in one request, with an optional TTL for all.
    ///
    /// # Errors
    /// [`Error::NoValueKey`]; any other [`Error`].
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)], ttl: Option<Duration>) -> Result<()> {
        let keyring = self.keyring()?;
        let pairs = pairs
            .iter()
            .map(|(k, v)| Ok((self.wire_key(k.as_ref()), Bytes::from(keyring.seal(k.as_ref(), v.as_ref())?))))
            .collect::<Result<Vec<_>>>()?;
        self.request(&Request::MSet { pairs, ttl }).await.map(drop)
    }

    /// Lists the keys starting with `prefix` (empty: every key the token may
    /// see) from a point-in-time view; see [`Scan`] for the guarantee.
    pub fn scan(&self, prefix: impl AsRef<[u8]>) -> Scan {
        Scan::new(self.clone(), Bytes::copy_from_slice(prefix.as_ref()))
    }

    /// Number of keys on the server.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn dbsize(&self) -> Result<u64> {
        let r = self.request(&Request::DbSize).await?;
        Ok(u64::from_be_bytes(
            r.body.as_ref().try_into().map_err(|_| Error::Protocol("DBSIZE reply is not 8 bytes".into()))?,
        ))
    }

    /// Asks the server to take a snapshot now; returns its cut sequence number.
    ///
    /// # Errors
    /// [`Error::Server`] with code `IOERR` if the snapshot failed; any other [`Error`].
    pub async fn save(&self) -> Result<u64> {
        let r = self.request(&Request::Save).await?;
        Ok(u64::from_be_bytes(
            r.body.as_ref().try_into().map_err(|_| Error::Protocol("SAVE reply is not 8 bytes".into()))?,
        ))
    }

    /// Creates a token (admin only); returns it in full. It is shown only here.
    ///
    /// # Errors
    /// [`Error::Server`] with `NOPERM` for a non-admin token; any other [`Error`].
    pub async fn token_add(&self, role: Role, prefixes: Vec<String>, label: impl Into<String>) -> Result<Token> {
        let r = self.request(&Request::TokenAdd { role, prefixes, label: label.into() }).await?;
        let text = std::str::from_utf8(&r.body).map_err(|_| Error::Protocol("TOKEN ADD reply is not UTF-8".into()))?;
        Token::parse(text).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Lists the server's tokens (admin only): ids, roles, prefixes, labels; never secrets or hashes.
    ///
    /// # Errors
    /// [`Error::Server`] with `NOPERM` for a non-admin token; any other [`Error`].
    pub async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        let r = self.request(&Request::TokenList).await?;
        let text = std::str::from_utf8(&r.body).map_err(|_| Error::Protocol("TOKEN LIST reply is not UTF-8".into()))?;
        let listing: TokenListing = toml::from_str(text).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(listing.token)
    }

    /// Revokes a token (admin only); returns whether it existed. Connections
    /// using it fail on their next request.
    ///
    /// # Errors
    /// [`Error::Server`] with `NOPERM` for a non-admin token; any other [`Error`].
    pub async fn token_revoke(&self, token_id: &str) -> Result<bool> {
        self.found(Request::TokenRevoke { id: token_id.to_string() }).await
    }

    /// A run-time setting's value (admin only): `maxmemory` (bytes),
    /// `maxmemory-policy` or `maxmemory-samples`.
    ///
    /// # Errors
    /// [`Error::Server`] with `NOPERM` for a non-admin token, `ERR` for an
    /// unknown setting; any other [`Error`].
    pub async fn config_get(&self, name: &str) -> Result<String> {
        let r = self.request(&Request::ConfigGet { name: name.to_string() }).await?;
        String::from_utf8(r.body.to_vec()).map_err(|_| Error::Protocol("CONFIG GET reply is not UTF-8".into()))
    }

    /// Changes a run-time setting (admin only) until the server stops, e.g.
    /// `config_set("maxmemory", "512MiB")`. A lower limit is applied before
    /// the answer: keys are evicted down to it.
    ///
    /// # Errors
    /// [`Error::Server`] with `NOPERM` for a non-admin token, `ERR` for an
    /// unknown setting or a bad value (nothing changes), `OOM` if the new
    /// limit is set but the policy cannot evict down to it.
    pub async fn config_set(&self, name: &str, value: &str) -> Result<()> {
        self.request(&Request::ConfigSet { name: name.to_string(), value: value.to_string() }).await?;
        Ok(())
    }

    /// The server's INFO text.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn info(&self) -> Result<String> {
        let r = self.request(&Request::Info).await?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    async fn found(&self, request: Request) -> Result<bool> {
        Ok(self.request(&request).await?.status == Status::Ok)
    }
}

/// A response, or the server's error it carries.
fn checked(response: Response) -> Result<Response> {
    match response.error_parts() {
        Some((code, message)) => Err(Error::Server { code, message }),
        None => Ok(response),
    }
}
