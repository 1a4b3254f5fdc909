//! The tokio server: listener, per-connection sessions, dispatch, INFO.
//!
//! [`Server::bind`] opens the listener; [`Server::run`] accepts connections
//! until the shutdown future resolves, then stops accepting, tells every
//! session to finish (each completes the batch it is executing and closes),
//! and waits up to `shutdown_grace` for them.
//!
//! Connections beyond `max_connections` get the handshake's "busy" rejection
//! and are closed at once. Every connection must finish the handshake within
//! `handshake_timeout` and send AUTH within another `handshake_timeout`;
//! authenticated connections idle for `idle_timeout` are closed.
//!
//! Every change goes through the append-only log before it is applied
//! ([`crate::persist`]); with `--fsync always` a session holds the replies to
//! a batch that wrote until the log reports those records fsynced. At shutdown
//! a final snapshot is taken and the log is flushed, except after a log
//! failure under `--fsync always`, which stops the server on its own
//! ([`ServerError::LogFailed`]) without a snapshot.

mod config;
mod config_command;
mod data_dir;
mod dispatch;
mod metrics;
mod request_buffers;
mod runtime;
mod scans;
pub mod server_keys;
mod service_manager;
mod session;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

pub use config::{ConfigError, DEFAULTS, MemoryLimit, ServerConfig, Settings};
pub use runtime::{IO_EVENTS_PER_POLL, runtime};
pub use stats::Stats;

use crate::auth::Authenticator;
use crate::periodic::every;
use crate::persist::Persistence;
use crate::store::{DefragTrigger, Store};
pub use data_dir::{
    CREDENTIALS_FILE, DataDir, DataDirError, InitReport, SERVER_KEY_FILE, SERVER_PUB_FILE, TOKENS_FILE, lock_data_dir,
};

/// How often the janitor looks for expired keys.
const JANITOR_INTERVAL: Duration = Duration::from_millis(100);
/// Keys one shard gives up per janitor pass, bounding lock hold time.
const JANITOR_BUDGET: usize = 1000;
/// How often active defrag looks at the key count (see `DefragTrigger`).
const DEFRAG_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes the sparse pages must leave unused for a defrag pass to copy.
const DEFRAG_MIN_WASTE: u64 = 1 << 20;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The authenticator could not be set up.
    #[error("{0}")]
    Auth(String),
    /// Recovery failed: the data dir is damaged or unreadable.
    #[error("cannot recover the data dir: {0}")]
    Persist(#[from] crate::persist::PersistError),
    /// `--metrics-listen` could not be served.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The append-only log failed under `fsync always`: the server stopped
    /// after answering the writes it could not make durable with `IOERR`.
    #[error("stopped: {0} (with fsync always a log failure is fatal; restart once the disk works)")]
    LogFailed(String),
}

/// State every session shares.
pub(crate) struct Shared {
    /// Held for the server's lifetime: it owns the data dir's lock.
    pub(crate) data: DataDir,
    pub(crate) store: Arc<Store>,
    pub(crate) persistence: Arc<Persistence>,
    pub(crate) auth: Authenticator,
    pub(crate) keys: server_keys::LiveKeys,
    pub(crate) config: ServerConfig,
    pub(crate) stats: Stats,
    pub(crate) request_buffers: Arc<request_buffers::RequestBuffers>,
    pub(crate) scans: scans::Scans,
    /// `None` unless `--metrics-listen` is set.
    pub(crate) metrics: Option<metrics::Metrics>,
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.listener.local_addr().ok()).finish_non_exhaustive()
    }
}

impl Server {
    /// Recovers the keyspace from the opened data dir and binds the listener.
    ///
    /// # Errors
    /// [`ServerError::Persist`] if the data dir's snapshot or log is damaged
    /// (naming file and offset), [`ServerError::Bind`] if the address is taken.
    pub async fn bind(config: ServerConfig, data: DataDir) -> Result<Self, ServerError> {
        let started = std::time::Instant::now();
        service_manager::status("loading the keyspace");
        let store = Store::new(config.shards);
        store.configure_memory(config.memory.bytes, config.memory.policy);
        store.memory().set_samples(config.memory.samples);
        let mut progress = |p: crate::persist::LoadProgress| service_manager::loading(p, started.elapsed());
        let (persistence, report) = Persistence::open_reporting(
            Arc::clone(&config.disk),
            data.root(),
            store,
            config.clock.clone(),
            config.persist,
            &mut progress,
        )?;
        let store = Arc::clone(persistence.store());
        info!(
            keys = store.len(),
            snapshot = %report.snapshot.as_ref().map_or_else(|| "none".into(), |(p, _)| p.display().to_string()),
            replayed = report.replayed,
            segments = report.segments.len(),
            ms = started.elapsed().as_millis() as u64,
            fsync = %config.persist.fsync,
            "recovered the keyspace"
        );
        service_manager::status(&format!("loaded {} keys in {} ms", store.len(), started.elapsed().as_millis()));
        fit_under_the_limit(&store, &config);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let metrics = config.metrics_listen.map(metrics::Metrics::serve).transpose()?;
        if let (Some(m), Some(addr)) = (&metrics, config.metrics_listen) {
            persistence.log().time_fsyncs(m.fsync_histogram());
            info!(%addr, "serving Prometheus metrics at /metrics");
        }
        let tokens_file = data.root().join(data_dir::TOKENS_FILE);
        let auth = Authenticator::new(data.tokens().clone(), Some(tokens_file), config.auth, config.clock.clone())
            .map_err(|e| ServerError::Auth(e.to_string()))?;
        let shared = Shared {
            keys: server_keys::LiveKeys::new(data.root(), data.keys().clone()),
            data,
            store,
            persistence,
            auth,
            request_buffers: request_buffers::RequestBuffers::new(config.request_buffer_limit),
            scans: scans::Scans::default(),
            metrics,
            config,
            stats: Stats::default(),
        };
        Ok(Self { listener, shared: Arc::new(shared) })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// If the OS cannot report it.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The data dir this server owns.
    pub fn data_dir(&self) -> &DataDir {
        &self.shared.data
    }

    /// The keyspace, for embedding and tests.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.shared.store)
    }

    /// Serves until `shutdown` resolves, then drains connections.
    ///
    /// # Errors
    /// [`ServerError::LogFailed`] when it stopped on its own because the log
    /// failed under `fsync always`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let shared = self.shared;
        let permits_total = shared.config.max_connections.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        let permits = Arc::new(Semaphore::new(permits_total));
        let (stop_tx, stop_rx) = watch::channel(false);
        let janitor = tokio::spawn(janitor(Arc::clone(&shared), stop_rx.clone()));
        let snapshots = shared.persistence.spawn_scheduler(stop_rx.clone());
        let token_watch = tokio::spawn(watch_tokens(Arc::clone(&shared), stop_rx.clone()));
        let metrics_sampler = tokio::spawn(sample_metrics(Arc::clone(&shared), stop_rx.clone()));
        let defragger = tokio::spawn(defragger(Arc::clone(&shared), stop_rx.clone()));
        info!(
            addr = %self.listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            public_key = %shared.keys.load().current.public_hex(),
            shards = shared.store.shard_count(),
            max_connections = permits_total,
            "cryptomem is serving"
        );
        service_manager::ready(&format!("serving {} keys", shared.store.len()));

        tokio::pin!(shutdown);
        let fatal = shared.persistence.fatal_failure();
        tokio::pin!(fatal);
        let mut outcome = Ok(());
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                e = &mut fatal => {
                    outcome = Err(ServerError::LogFailed(e));
                    break;
                }
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                stats::bump(&shared.stats.connections_rejected);
                warn!(%peer, "connection limit reached; rejecting");
                session::reject_busy(&stream);
                continue;
            };
            stats::bump(&shared.stats.connections_total);
            let shared = Arc::clone(&shared);
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _open = OpenConnection::new(&shared.stats);
                session::serve_connection(stream, peer, Arc::clone(&shared), stop).await;
            });
        }

        info!("shutting down: closing connections");
        drop(self.listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(
            shared.config.shutdown_grace,
            permits.acquire_many(u32::try_from(permits_total).unwrap_or(u32::MAX)),
        )
        .await;
        if drained.is_err() {
            warn!("some connections did not close within the shutdown grace period");
        }
        let _ = janitor.await;
        let _ = snapshots.await;
        let _ = token_watch.await;
        let _ = metrics_sampler.await;
        let _ = defragger.await;
        shared.persistence.shutdown().await;
        info!("shutdown complete");
        outcome
    }
}

/// Counts an open connection for INFO for as long as it lives.
struct OpenConnection<'a>(&'a Stats);

impl<'a> OpenConnection<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats::bump(&stats.connections_current);
        Self(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_current.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Picks up offline edits of `tokens.toml` and server key rotations within a second.
async fn watch_tokens(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    every(Duration::from_secs(1), stop, || {
        match shared.keys.reload_if_changed() {
            Ok(true) => info!(
                accepted = ?shared.keys.load().accepted_public_hex(shared.config.clock.now_ms()),
                "server keys changed on disk: handshakes to these public keys are accepted"
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "server key files changed on disk but cannot be read; keeping the previous keys")
            }
        }
        match shared.auth.reload_if_changed() {
            Ok(true) => info!(tokens = shared.auth.token_count(), "token table changed on disk: reloaded"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "token table changed on disk but cannot be read; keeping the previous one"),
        }
        std::future::ready(())
    })
    .await;
}

/// Copies the server's counters into the metrics exporter once a second.
async fn sample_metrics(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    if shared.metrics.is_none() {
        return;
    }
    every(Duration::from_secs(1), stop, || {
        if let Some(m) = &shared.metrics {
            m.sample(&shared);
            m.upkeep();
        }
        std::future::ready(())
    })
    .await;
}

/// A data dir holding more than `--maxmemory` allows is evicted down to it
/// at start (journaled, so it stays down), or, under `noeviction`, serves
/// reads and answers writes `OOM` until keys are deleted.
fn fit_under_the_limit(store: &Store, config: &ServerConfig) {
    let limit = store.memory().limit();
    if limit == 0 || store.memory().used() <= limit {
        return;
    }
    match store.evict_to_limit(config.clock.now_ms()) {
        Ok(evicted) => info!(
            evicted,
            used_memory = store.memory().used(),
            maxmemory = limit,
            policy = %store.memory().policy(),
            "the recovered keyspace was over the memory limit: evicted keys to fit"
        ),
        Err(e) => {
            warn!(error = %e, "the recovered keyspace is over the memory limit; writes that need memory answer OOM")
        }
    }
}

/// What counts against `--maxmemory` besides the keys and the eviction
/// policy's tables (which the store counts): request buffers. The log's append buffer does not (as Redis leaves
/// its AOF buffer out): it has its own bound, and evicting keys because the
/// disk is slow would lose data to a stall.
fn memory_outside_keys(shared: &Shared) -> u64 {
    shared.request_buffers.held() as u64
}

/// Moves map nodes off sparse pages once the key count has moved and settled
/// (`store/defrag.rs`), unless `--active-defrag false`.
async fn defragger(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    if !shared.config.active_defrag {
        return;
    }
    let mut trigger = DefragTrigger::new(shared.store.len());
    every(DEFRAG_CHECK_INTERVAL, stop, || {
        let due = trigger.due(shared.store.len());
        let shared = Arc::clone(&shared);
        async move {
            if !due {
                return;
            }
            let store = Arc::clone(&shared.store);
            let started = std::time::Instant::now();
            let Ok(pass) = tokio::task::spawn_blocking(move || store.defrag_maps(DEFRAG_MIN_WASTE)).await else {
                return;
            };
            let took_ms = started.elapsed().as_millis();
            if pass.copied > 0 {
                stats::bump(&shared.stats.defrag_passes);
                shared.stats.defrag_hits.fetch_add(pass.copied as u64, std::sync::atomic::Ordering::Relaxed);
            }
            debug!(?pass, took_ms, "active defrag");
        }
    })
    .await;
}

/// Reclaims expired keys, a bounded batch per shard at a time, and updates
/// the memory the limit counts outside the keyspace.
async fn janitor(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    every(JANITOR_INTERVAL, stop, || {
        let shared = Arc::clone(&shared);
        async move {
            shared.store.memory().set_external(memory_outside_keys(&shared));
            shared.scans.drop_idle();
            loop {
                let (removed, more) = shared.store.reclaim_expired(shared.config.clock.now_ms(), JANITOR_BUDGET);
                shared.stats.expired_keys.fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    })
    .await;
}
