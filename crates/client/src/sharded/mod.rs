//! A client over several independent servers: every key lives on one of
//! them, chosen by the client ([`rendezvous`] hashing), as memcached
//! clients (ketama) and Envoy's Redis proxy do. No server knows of the
//! others; there is no coordinator and nothing to configure on them.
//!
//! [`ShardedClient`] has [`Client`]'s single-key calls, routed to the key's
//! server. [`ShardedClient::mget`], [`ShardedClient::mset`] and
//! [`ShardedPipeline`] split their keys per server, send the parts
//! concurrently and put the answers back in the caller's order;
//! [`ShardedClient::scan`] lists every server in turn;
//! [`ShardedClient::dbsize`] sums. Keys are placed by the name the server
//! sees: with hidden names, the hidden name, so each server's token
//! prefixes apply unchanged. Every server must accept the same value keys
//! (the client seals once per key, whichever server stores it).
//!
//! # A server that is down
//! With [`Failover::Strict`] (the default) the keys of a server that cannot
//! be reached fail at once with [`Error::Unavailable`] naming it, and the
//! other servers' keys keep working; once it is back (each server's
//! client reconnects with its [`crate::Backoff`]) its keys work again with
//! the data it kept. Nothing is moved silently: for a persistent cache,
//! serving a key from another server while its own is down would serve a
//! stale copy once it returns.
//!
//! [`Failover::CacheOnly`] sends a down server's keys to the next server in
//! their [`rendezvous`] order instead, for data that can always be
//! rebuilt. The price: writes made during the outage land on the stand-in,
//! and when the owner returns, reads go back to it and see what it held
//! before (stale, or deleted since); the stand-in's copies stay until
//! they expire or are evicted, and [`ShardedClient::scan`] may list such a
//! key twice. Use it with TTLs.

mod cluster_file;
mod pipeline;
pub mod rendezvous;
mod scan;

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

pub use cluster_file::{ClusterFile, ClusterServer};
pub use pipeline::ShardedPipeline;
pub use scan::ShardedScan;

use crate::value_crypto::Keyring;
use crate::{Client, ClientConfig, Error, HiddenNames, KeyTtl, Result, SetOptions};
use rendezvous::Rendezvous;

/// What the keys of a server that cannot be reached do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Failover {
    /// Fail with [`Error::Unavailable`] until the server is back.
    #[default]
    Strict,
    /// Go to the next server in the key's rendezvous order (see the
    /// [module docs](self) for what that costs).
    CacheOnly,
}

/// The servers of a [`ShardedClient`] and how keys are spread over them.
#[derive(Debug, Clone, Default)]
pub struct ShardedConfig {
    servers: Vec<(String, f64, ClientConfig)>,
    failover: Failover,
    keyring: Option<Keyring>,
    hidden_names: Option<HiddenNames>,
}

impl ShardedConfig {
    /// No servers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a server named by its address, with weight 1.
    #[must_use]
    pub fn server(self, config: ClientConfig) -> Self {
        let name = config.server.clone();
        self.named_server(name, 1.0, config)
    }

    /// Adds a server with a placement name (keys follow the name, not the
    /// address) and a weight (its share of keys relative to the others).
    #[must_use]
    pub fn named_server(mut self, name: impl Into<String>, weight: f64, config: ClientConfig) -> Self {
        self.servers.push((name.into(), weight, config));
        self
    }

    /// Sets what a down server's keys do.
    #[must_use]
    pub fn with_failover(mut self, failover: Failover) -> Self {
        self.failover = failover;
        self
    }

    /// Value keys for every server (else each server's [`ClientConfig::keyring`]).
    #[must_use]
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Hides key names on every server (and places keys by the hidden name).
    /// Hidden names are set here only: a server's own
    /// [`ClientConfig::hidden_names`] is replaced by this.
    #[must_use]
    pub fn with_hidden_names(mut self, names: HiddenNames) -> Self {
        self.hidden_names = Some(names);
        self
    }

    /// Changes every server's [`ClientConfig`] (connections, timeouts, backoff).
    #[must_use]
    pub fn map_servers(mut self, mut f: impl FnMut(ClientConfig) -> ClientConfig) -> Self {
        self.servers = self.servers.into_iter().map(|(n, w, c)| (n, w, f(c))).collect();
        self
    }

    /// From a cluster file ([`ClusterFile`]).
    ///
    /// # Errors
    /// [`Error::Credentials`] naming the file and the problem.
    pub fn from_cluster_file(path: &Path) -> Result<Self> {
        let file = ClusterFile::load(path)?;
        let servers = file
            .servers
            .into_iter()
            .map(|s| (s.name, s.weight, ClientConfig::from_credentials(s.credentials)))
            .collect();
        Ok(Self { servers, failover: file.failover, keyring: None, hidden_names: None })
    }
}

struct Shard {
    name: String,
    client: Client,
}

struct Shards {
    servers: Vec<Shard>,
    placement: Rendezvous,
    failover: Failover,
    hidden_names: Option<HiddenNames>,
}

/// A client whose keys are spread over several servers. See the [module docs](self).
#[derive(Clone)]
pub struct ShardedClient {
    inner: Arc<Shards>,
}

impl std::fmt::Debug for ShardedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedClient")
            .field("servers", &self.inner.servers.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("failover", &self.inner.failover)
            .finish_non_exhaustive()
    }
}

/// Whether a call failed because its server could not be reached.
fn is_unreachable(e: &Error) -> bool {
    matches!(e, Error::Connect { .. } | Error::ConnectionLost(_) | Error::Timeout(_) | Error::Unavailable { .. })
}

/// `e` as the caller sees it: a failure to reach `server` is
/// [`Error::Unavailable`] naming it; anything else is unchanged.
fn unavailable(server: &str, e: Error) -> Error {
    match e {
        Error::Unavailable { .. } => e,
        e if is_unreachable(&e) => Error::Unavailable { server: server.to_string(), reason: e.to_string() },
        e => e,
    }
}

impl ShardedClient {
    /// A client that connects to each server on first use, so a program
    /// can start while some are down.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no servers, a repeated name or a bad weight.
    pub fn new(config: ShardedConfig) -> Result<Self> {
        let ShardedConfig { servers, failover, keyring, hidden_names } = config;
        if servers.is_empty() {
            return Err(Error::InvalidArgument("a sharded client needs at least one server".into()));
        }
        let placement = Rendezvous::new(servers.iter().map(|(name, weight, _)| (name.as_str(), *weight)))
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        let servers = servers
            .into_iter()
            .map(|(name, _, mut config)| {
                if !names.insert(name.clone()) {
                    return Err(Error::InvalidArgument(format!("two servers are named {name:?}")));
                }
                if keyring.is_some() {
                    config.keyring.clone_from(&keyring);
                }
                // Placement and the servers must agree on the names sent.
                config.hidden_names.clone_from(&hidden_names);
                Ok(Shard { name, client: Client::new(config) })
            })
            .collect::<Result<_>>()?;
        Ok(Self { inner: Arc::new(Shards { servers, placement, failover, hidden_names }) })
    }

    /// Connects to and authenticates with every server at once, so
    /// configuration mistakes show up here.
    ///
    /// # Errors
    /// As [`ShardedClient::new`]; then the first server's failure, as
    /// [`Error::Unavailable`] when it cannot be reached.
    pub async fn connect(config: ShardedConfig) -> Result<Self> {
        let client = Self::new(config)?;
        client.ping().await?;
        Ok(client)
    }

    /// Connects with a cluster file and optional value keys.
    ///
    /// # Errors
    /// [`Error::Credentials`] plus those of [`ShardedClient::connect`].
    pub async fn from_cluster_file(path: &Path, keyring: Option<Keyring>) -> Result<Self> {
        let mut config = ShardedConfig::from_cluster_file(path)?;
        config.keyring = keyring;
        Self::connect(config).await
    }

    /// Every server's name and its own [`Client`], for per-server commands
    /// (tokens, CONFIG, SAVE) and monitoring.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &Client)> {
        self.inner.servers.iter().map(|s| (s.name.as_str(), &s.client))
    }

    /// The failover mode.
    pub fn failover(&self) -> Failover {
        self.inner.failover
    }

    /// The name the servers see for `key`, which places it.
    fn placement_name<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        match &self.inner.hidden_names {
            Some(names) => Cow::Owned(names.wire_name(key).to_vec()),
            None => Cow::Borrowed(key),
        }
    }

    /// The server for a placement name, skipping `excluded` ones (and, in
    /// cache-only mode, those known to be down while another is not).
    fn route(&self, name: &[u8], excluded: &[bool]) -> Option<usize> {
        let shards = &self.inner;
        // `excluded` is empty until a server fails: no allocation per call.
        let allowed = |i: usize| !excluded.get(i).copied().unwrap_or(false);
        match shards.failover {
            Failover::Strict => shards.placement.owner(name),
            Failover::CacheOnly => shards
                .placement
                .owner_among(name, |i| allowed(i) && !shards.servers[i].client.is_down())
                .or_else(|| shards.placement.owner_among(name, allowed)),
        }
    }

    /// The index of the server `key` goes to now.
    pub(crate) fn index_for(&self, key: &[u8]) -> usize {
        self.route(&self.placement_name(key), &[]).unwrap_or(0)
    }

    /// The name of the server that owns `key` (in cache-only mode, the one
    /// it goes to while its owner is down).
    pub fn server_for(&self, key: impl AsRef<[u8]>) -> &str {
        &self.inner.servers[self.index_for(key.as_ref())].name
    }

    /// The client of the server `key` goes to, to call something this type
    /// does not route itself.
    pub fn client_for(&self, key: impl AsRef<[u8]>) -> &Client {
        &self.inner.servers[self.index_for(key.as_ref())].client
    }

    /// `e` from server `server`, as the caller sees it ([`unavailable`]).
    fn tag(&self, server: usize, e: Error) -> Error {
        unavailable(&self.inner.servers[server].name, e)
    }

    /// Marks `server` as failed; whether another server may be tried.
    fn fail_over(&self, server: usize, excluded: &mut Vec<bool>) -> bool {
        excluded.resize(self.inner.servers.len(), false);
        excluded[server] = true;
        self.inner.failover == Failover::CacheOnly && excluded.iter().any(|x| !x)
    }

    /// Runs `call` on the server of `key`, failing over in cache-only mode.
    async fn on_key<'a, T, F, Fut>(&'a self, key: &[u8], call: F) -> Result<T>
    where
        F: Fn(&'a Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let name = self.placement_name(key);
        let mut excluded = Vec::new();
        loop {
            let server = self.route(&name, &excluded).unwrap_or(0);
            match call(&self.inner.servers[server].client).await {
                Err(e) if is_unreachable(&e) && self.fail_over(server, &mut excluded) => {}
                other => return other.map_err(|e| self.tag(server, e)),
            }
        }
    }

    /// Runs `call` once per server with the positions of `keys` it holds,
    /// concurrently; returns each part with its positions. In cache-only
    /// mode the keys of a server that fails are regrouped over the rest.
    async fn per_server<'a, K, T, F, Fut>(&'a self, keys: &[K], call: F) -> Result<Vec<(Vec<usize>, T)>>
    where
        K: AsRef<[u8]>,
        F: Fn(&'a Client, &[usize]) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let servers = self.inner.servers.len();
        let names: Vec<Cow<'_, [u8]>> = keys.iter().map(|k| self.placement_name(k.as_ref())).collect();
        let mut excluded = Vec::new();
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let mut parts = Vec::new();
        while !pending.is_empty() {
            let mut groups = vec![Vec::new(); servers];
            for p in pending.drain(..) {
                groups[self.route(&names[p], &excluded).unwrap_or(0)].push(p);
            }
            let calls = groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).map(|(server, group)| {
                let call = call(&self.inner.servers[server].client, &group);
                async move { (server, group, call.await) }
            });
            for (server, group, result) in join_all(calls).await {
                match result {
                    Ok(part) => parts.push((group, part)),
                    Err(e) if is_unreachable(&e) && self.fail_over(server, &mut excluded) => pending.extend(group),
                    Err(e) => return Err(self.tag(server, e)),
                }
            }
        }
        Ok(parts)
    }

    /// Puts per-server answers back in the order of the keys asked for.
    fn reassemble<V>(count: usize, parts: Vec<(Vec<usize>, Vec<V>)>) -> Result<Vec<V>> {
        let mut slots: Vec<Option<V>> = std::iter::repeat_with(|| None).take(count).collect();
        for (positions, values) in parts {
            if positions.len() != values.len() {
                return Err(Error::Protocol(format!("asked for {} keys, got {}", positions.len(), values.len())));
            }
            for (p, v) in positions.into_iter().zip(values) {
                slots[p] = Some(v);
            }
        }
        slots.into_iter().map(|v| v.ok_or_else(|| Error::Protocol("a key got no answer".into()))).collect()
    }

    /// Runs `call` on every server at once; their answers in server order.
    async fn on_all<'a, T, F, Fut>(&'a self, call: F) -> Vec<Result<T>>
    where
        F: Fn(&'a Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let calls = self.inner.servers.iter().map(|s| call(&s.client));
        join_all(calls).await.into_iter().enumerate().map(|(i, r)| r.map_err(|e| self.tag(i, e))).collect()
    }

    /// `PING` to every server.
    ///
    /// # Errors
    /// The first server's failure.
    pub async fn ping(&self) -> Result<()> {
        self.on_all(|c| async move { c.ping().await }).await.into_iter().collect()
    }

    /// Reads and opens a sealed value.
    ///
    /// # Errors
    /// As [`Client::get`], and [`Error::Unavailable`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.get(key).await }).await
    }

    /// Seals and stores a value with no TTL.
    ///
    /// # Errors
    /// As [`Client::set`], and [`Error::Unavailable`].
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.set_with(key, value, SetOptions::default()).await.map(drop)
    }

    /// Seals and stores a value with options; whether it was written.
    ///
    /// # Errors
    /// As [`Client::set_with`], and [`Error::Unavailable`].
    pub async fn set_with(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, options: SetOptions) -> Result<bool> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.on_key(key, |c| async move { c.set_with(key, value, options).await }).await
    }

    /// Reads the stored bytes without opening them.
    ///
    /// # Errors
    /// As [`Client::get_raw`], and [`Error::Unavailable`].
    pub async fn get_raw(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.get_raw(key).await }).await
    }

    /// Stores bytes as given, without sealing.
    ///
    /// # Errors
    /// As [`Client::set_raw_with`], and [`Error::Unavailable`].
    pub async fn set_raw_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<bool> {
        let (key, value) = (key.as_ref(), value.into());
        self.on_key(key, |c| {
            let value = value.clone();
            async move { c.set_raw_with(key, value, options).await }
        })
        .await
    }

    /// Deletes a key; whether it existed.
    ///
    /// # Errors
    /// As [`Client::delete`], and [`Error::Unavailable`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.delete(key).await }).await
    }

    /// Whether a key exists.
    ///
    /// # Errors
    /// As [`Client::exists`], and [`Error::Unavailable`].
    pub async fn exists(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.exists(key).await }).await
    }

    /// Sets a TTL on an existing key; whether it existed.
    ///
    /// # Errors
    /// As [`Client::expire`], and [`Error::Unavailable`].
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.expire(key, ttl).await }).await
    }

    /// Removes a key's TTL: `None` if the key is missing, else whether it had one.
    ///
    /// # Errors
    /// As [`Client::persist`], and [`Error::Unavailable`].
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<Option<bool>> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.persist(key).await }).await
    }

    /// A key's remaining time to live.
    ///
    /// # Errors
    /// As [`Client::ttl`], and [`Error::Unavailable`].
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<KeyTtl> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.ttl(key).await }).await
    }

    /// The opened value and its version ([`Client::get_versioned`]).
    ///
    /// # Errors
    /// As [`Client::get_versioned`], and [`Error::Unavailable`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(u64, Vec<u8>)>> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.get_versioned(key).await }).await
    }

    /// Stores only if the key's version is `version` ([`Client::set_if_version`]).
    ///
    /// # Errors
    /// As [`Client::set_if_version`], and [`Error::Unavailable`].
    pub async fn set_if_version(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        version: u64,
        options: SetOptions,
    ) -> Result<u64> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.on_key(key, |c| async move { c.set_if_version(key, value, version, options).await }).await
    }

    /// Deletes only if the key's version is `version` ([`Client::delete_if_version`]).
    ///
    /// # Errors
    /// As [`Client::delete_if_version`], and [`Error::Unavailable`].
    pub async fn delete_if_version(&self, key: impl AsRef<[u8]>, version: u64) -> Result<bool> {
        let key = key.as_ref();
        self.on_key(key, |c| async move { c.delete_if_version(key, version).await }).await
    }

    /// Read-modify-write without lost updates ([`Client::update`]), on the
    /// key's server. It does not fail over: a version belongs to one server.
    ///
    /// # Errors
    /// As [`Client::update`], and [`Error::Unavailable`].
    pub async fn update<F>(&self, key: impl AsRef<[u8]>, f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        let key = key.as_ref();
        let server = self.index_for(key);
        self.inner.servers[server].client.update(key, f).await.map_err(|e| self.tag(server, e))
    }

    /// Reads and opens several values: one MGET per server involved, sent
    /// concurrently; the answers in the order of `keys`.
    ///
    /// # Errors
    /// As [`Client::mget`]; [`Error::Unavailable`] if any involved server is
    /// (in strict mode).
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let parts = self
            .per_server(keys, |c, positions| {
                let subset: Vec<&[u8]> = positions.iter().map(|&p| keys[p].as_ref()).collect();
                async move { c.mget(&subset).await }
            })
            .await?;
        Self::reassemble(keys.len(), parts)
    }

    /// Reads several stored values without opening them, like [`ShardedClient::mget`].
    ///
    /// # Errors
    /// As [`ShardedClient::mget`].
    pub async fn mget_raw<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let parts = self
            .per_server(keys, |c, positions| {
                let subset: Vec<&[u8]> = positions.iter().map(|&p| keys[p].as_ref()).collect();
                async move { c.mget_raw(&subset).await }
            })
            .await?;
        Self::reassemble(keys.len(), parts)
    }

    /// Seals and stores several values: one MSET per server involved, sent
    /// concurrently. Each server's part is applied as a whole, but not the
    /// call as a whole: on an error, other servers' parts may be stored.
    ///
    /// # Errors
    /// As [`Client::mset`]; [`Error::Unavailable`] if any involved server is
    /// (in strict mode).
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)], ttl: Option<Duration>) -> Result<()> {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        self.per_server(&keys, |c, positions| {
            let subset: Vec<(&[u8], &[u8])> =
                positions.iter().map(|&p| (pairs[p].0.as_ref(), pairs[p].1.as_ref())).collect();
            async move { c.mset(&subset, ttl).await }
        })
        .await
        .map(drop)
    }

    /// Starts a [`ShardedPipeline`].
    pub fn pipeline(&self) -> ShardedPipeline<'_> {
        ShardedPipeline::new(self)
    }

    /// Lists the keys starting with `prefix` on every server, one server
    /// after another (see [`ShardedScan`]).
    pub fn scan(&self, prefix: impl AsRef<[u8]>) -> ShardedScan {
        ShardedScan::new(self, prefix.as_ref())
    }

    /// The number of keys on all servers together.
    ///
    /// # Errors
    /// The first server's failure.
    pub async fn dbsize(&self) -> Result<u64> {
        let sizes = self.on_all(|c| async move { c.dbsize().await }).await;
        sizes.into_iter().sum()
    }

    /// Every server's INFO text, or why it could not be had, by name.
    pub async fn info(&self) -> Vec<(String, Result<String>)> {
        let texts = self.on_all(|c| async move { c.info().await }).await;
        self.inner.servers.iter().map(|s| s.name.clone()).zip(texts).collect()
    }

    /// The name and client of server `index`.
    pub(crate) fn server(&self, index: usize) -> (&str, &Client) {
        let s = &self.inner.servers[index];
        (&s.name, &s.client)
    }
}
