//! Server settings from flags, `CRYPTOMEM_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//!
//! | flag                  | env                          | file key            | default          |
//! |-----------------------|------------------------------|---------------------|------------------|
//! | `--listen`            | `CRYPTOMEM_LISTEN`           | `listen`            | `127.0.0.1:7379` |
//! | `--data`              | `CRYPTOMEM_DATA`             | `data`              | `./data`         |
//! | `--max-connections`   | `CRYPTOMEM_MAX_CONNECTIONS`  | `max_connections`   | 10000            |
//! | `--handshake-timeout` | `CRYPTOMEM_HANDSHAKE_TIMEOUT`| `handshake_timeout` | `10s` (also the time to send AUTH) |
//! | `--idle-timeout`      | `CRYPTOMEM_IDLE_TIMEOUT`     | `idle_timeout`      | `300s`; `0` = never |
//! | `--request-timeout` | `CRYPTOMEM_REQUEST_TIMEOUT`  | `request_timeout`   | `60s`: time from a request's first byte to its last; `0` = none |
//! | `--request-buffer-limit` | `CRYPTOMEM_REQUEST_BUFFER_LIMIT` | `request_buffer_limit` | `1GiB`: bytes all connections together may hold for requests still arriving |
//! | `--max-key-size`      | `CRYPTOMEM_MAX_KEY_SIZE`     | `max_key_size`      | `1KiB` (at most 64KiB - 1) |
//! | `--max-value-size`    | `CRYPTOMEM_MAX_VALUE_SIZE`   | `max_value_size`    | `16MiB` (at most 512MiB) |
//! | `--max-batch-keys`    | `CRYPTOMEM_MAX_BATCH_KEYS`   | `max_batch_keys`    | 10000            |
//! | `--shards`            | `CRYPTOMEM_SHARDS`           | `shards`            | 4096, or fewer under a `--maxmemory` below 24MiB (one per 12KiB of it, rounded up to a power of two, at least 64 per thread; fixed at start); rounded up to a power of two, at most 65536 |
//! | `--threads`           | `CRYPTOMEM_THREADS`          | `threads`           | cores - 1, at least 1: threads serving connections |
//! | `--auth-concurrency`  | `CRYPTOMEM_AUTH_CONCURRENCY` | `auth_concurrency`  | half the cores, at least 1 |
//! | `--auth-max-failures` | `CRYPTOMEM_AUTH_MAX_FAILURES`| `auth_max_failures` | 10 failed AUTHs per address per window ... |
//! | `--auth-failure-window` | `CRYPTOMEM_AUTH_FAILURE_WINDOW` | `auth_failure_window` | `60s` |
//! | `--auth-lockout`      | `CRYPTOMEM_AUTH_LOCKOUT`     | `auth_lockout`      | `5m` ... lock the address out this long |
//! | `--auth-failure-delay` | `CRYPTOMEM_AUTH_FAILURE_DELAY` | `auth_failure_delay` | `250ms` added to every failed AUTH |
//! | `--auth-cache`        | `CRYPTOMEM_AUTH_CACHE`       | `auth_cache`        | `true`: reconnects of a verified token skip argon2 |
//! | `--token-hash-memory` | `CRYPTOMEM_TOKEN_HASH_MEMORY`| `token_hash_memory` | `19MiB`, at least 19MiB (OWASP) |
//! | `--token-hash-passes` | `CRYPTOMEM_TOKEN_HASH_PASSES`| `token_hash_passes` | 2, at least 2 (OWASP) |
//! | `--fsync`             | `CRYPTOMEM_FSYNC`            | `fsync`             | `everysec` (`always`, `no`) |
//! | `--snapshot-interval` | `CRYPTOMEM_SNAPSHOT_INTERVAL`| `snapshot_interval` | `5m` |
//! | `--snapshot-log-min-size` | `CRYPTOMEM_SNAPSHOT_LOG_MIN_SIZE` | `snapshot_log_min_size` | `64MiB` |
//! | `--snapshot-log-percentage` | `CRYPTOMEM_SNAPSHOT_LOG_PERCENTAGE` | `snapshot_log_percentage` | 100; 0 = never by log size |
//! | `--snapshot-after-writes` | `CRYPTOMEM_SNAPSHOT_AFTER_WRITES` | `snapshot_after_writes` | 0 = never by count |
//! | `--maxmemory`         | `CRYPTOMEM_MAXMEMORY`        | `maxmemory`         | `0` = no limit; bytes with units (`512MiB`) |
//! | `--maxmemory-policy`  | `CRYPTOMEM_MAXMEMORY_POLICY` | `maxmemory_policy`  | `noeviction` (Redis's names, and `allkeys-tinylfu`) |
//! | `--maxmemory-samples` | `CRYPTOMEM_MAXMEMORY_SAMPLES`| `maxmemory_samples` | 5 keys drawn per eviction, 1 to 64 |
//! | `--active-defrag`     | `CRYPTOMEM_ACTIVE_DEFRAG`    | `active_defrag`     | `true`: move map nodes off sparse pages once the key count settles |
//!
//! The file is named by `--config` / `CRYPTOMEM_CONFIG`; unknown keys in it are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{AuthConfig, HashParams, ThrottleConfig};
use crate::persist::PersistConfig;
use crate::persist::disk::{Disk, OsDisk};
use crate::protocol::{HARD_MAX_VALUE_LEN, Limits};
use crate::store::{Clock, EvictionPolicy, shards_for_limit};
use crate::units::{parse_duration, parse_size};

/// Default listen address (Redis is 6379; we are one thousand up).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7379";

/// Every setting with a fixed built-in default, by flag, spelled as a flag
/// would take it: the one definition [`Settings::built_in`] (and so
/// [`Settings::resolve`]) reads. Tests check the `--help` texts and the
/// README's table against it. `threads` and `auth-concurrency` depend on the
/// cores and are computed in `resolve`.
pub const DEFAULTS: [(&str, &str); 26] = [
    ("listen", DEFAULT_LISTEN),
    ("data", "./data"),
    ("max-connections", "10000"),
    ("handshake-timeout", "10s"),
    ("idle-timeout", "300s"),
    ("request-timeout", "60s"),
    ("request-buffer-limit", "1GiB"),
    ("max-key-size", "1KiB"),
    ("max-value-size", "16MiB"),
    ("max-batch-keys", "10000"),
    ("auth-max-failures", "10"),
    ("auth-failure-window", "60s"),
    ("auth-lockout", "5m"),
    ("auth-failure-delay", "250ms"),
    ("auth-cache", "true"),
    ("token-hash-memory", "19MiB"),
    ("token-hash-passes", "2"),
    ("fsync", "everysec"),
    ("snapshot-interval", "5m"),
    ("snapshot-log-min-size", "64MiB"),
    ("snapshot-log-percentage", "100"),
    ("snapshot-after-writes", "0"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("maxmemory-samples", "5"),
    ("active-defrag", "true"),
];

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file cannot be read or parsed (unknown keys included).
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting's value is malformed or out of range.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting, as its flag is spelled (`max-key-size`).
        setting: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid { setting, reason: reason.to_string() }
}

/// Settings as given by one source; `None` means "not set here".
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:7379].
    #[arg(long, env = "CRYPTOMEM_LISTEN")]
    pub listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "CRYPTOMEM_DATA")]
    pub data: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no auth:
    /// bind it to loopback or a private interface) [default: off].
    #[arg(long, env = "CRYPTOMEM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Most simultaneous connections [default: 10000].
    #[arg(long, env = "CRYPTOMEM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time allowed for the handshake, and again for AUTH [default: 10s].
    #[arg(long, env = "CRYPTOMEM_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// Close connections idle this long; 0 = never [default: 300s].
    #[arg(long, env = "CRYPTOMEM_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Time from a request's first byte to its last; 0 = none [default: 60s].
    #[arg(long, env = "CRYPTOMEM_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Bytes all connections together may hold for requests still arriving
    /// [default: 1GiB].
    #[arg(long, env = "CRYPTOMEM_REQUEST_BUFFER_LIMIT")]
    pub request_buffer_limit: Option<String>,
    /// Longest key [default: 1KiB].
    #[arg(long, env = "CRYPTOMEM_MAX_KEY_SIZE")]
    pub max_key_size: Option<String>,
    /// Longest value, and longest MGET/MSET list [default: 16MiB].
    #[arg(long, env = "CRYPTOMEM_MAX_VALUE_SIZE")]
    pub max_value_size: Option<String>,
    /// Most keys in one MGET or MSET [default: 10000].
    #[arg(long, env = "CRYPTOMEM_MAX_BATCH_KEYS")]
    pub max_batch_keys: Option<usize>,
    /// Number of store shards, rounded up to a power of two, at most 65536
    /// [default: 4096, fewer under a --maxmemory below 24MiB].
    #[arg(long, env = "CRYPTOMEM_SHARDS")]
    pub shards: Option<usize>,
    /// Threads serving connections [default: one less than the cores, at least 1].
    #[arg(long, env = "CRYPTOMEM_THREADS")]
    pub threads: Option<usize>,
    /// Most argon2 token verifications running at once [default: half the cores].
    #[arg(long, env = "CRYPTOMEM_AUTH_CONCURRENCY")]
    pub auth_concurrency: Option<usize>,
    /// Failed AUTHs from one address within the window before it is locked out [default: 10].
    #[arg(long, env = "CRYPTOMEM_AUTH_MAX_FAILURES")]
    pub auth_max_failures: Option<u32>,
    /// Window in which failed AUTHs are counted [default: 60s].
    #[arg(long, env = "CRYPTOMEM_AUTH_FAILURE_WINDOW")]
    pub auth_failure_window: Option<String>,
    /// How long a locked-out address is refused [default: 5m].
    #[arg(long, env = "CRYPTOMEM_AUTH_LOCKOUT")]
    pub auth_lockout: Option<String>,
    /// Delay added to every failed AUTH [default: 250ms].
    #[arg(long, env = "CRYPTOMEM_AUTH_FAILURE_DELAY")]
    pub auth_failure_delay: Option<String>,
    /// Let reconnects of an already verified token skip argon2 [default: true].
    #[arg(long, env = "CRYPTOMEM_AUTH_CACHE")]
    pub auth_cache: Option<bool>,
    /// Argon2id memory for new token hashes, at least 19MiB [default: 19MiB].
    #[arg(long, env = "CRYPTOMEM_TOKEN_HASH_MEMORY")]
    pub token_hash_memory: Option<String>,
    /// Argon2id passes for new token hashes, at least 2 [default: 2].
    #[arg(long, env = "CRYPTOMEM_TOKEN_HASH_PASSES")]
    pub token_hash_passes: Option<u32>,
    /// When the append-only log fsyncs: always, everysec or no [default: everysec].
    #[arg(long, env = "CRYPTOMEM_FSYNC")]
    pub fsync: Option<String>,
    /// Snapshot at least this often when anything changed [default: 5m].
    #[arg(long, env = "CRYPTOMEM_SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<String>,
    /// Snapshot once the log written since the last snapshot is at least
    /// this large and at least --snapshot-log-percentage of that snapshot's
    /// size (as Redis's auto-aof-rewrite-min-size) [default: 64MiB].
    #[arg(long, env = "CRYPTOMEM_SNAPSHOT_LOG_MIN_SIZE")]
    pub snapshot_log_min_size: Option<String>,
    /// See --snapshot-log-min-size; 0 = never by log size (as Redis's
    /// auto-aof-rewrite-percentage) [default: 100].
    #[arg(long, env = "CRYPTOMEM_SNAPSHOT_LOG_PERCENTAGE")]
    pub snapshot_log_percentage: Option<u64>,
    /// Also snapshot after this many changes; 0 = never by count [default: 0].
    #[arg(long, env = "CRYPTOMEM_SNAPSHOT_AFTER_WRITES")]
    pub snapshot_after_writes: Option<u64>,
    /// Memory limit for keys and buffers, e.g. 512MiB; 0 = none [default: 0].
    #[arg(long, env = "CRYPTOMEM_MAXMEMORY")]
    pub maxmemory: Option<String>,
    /// What goes at the limit: noeviction, allkeys-lru, volatile-lru,
    /// allkeys-lfu, volatile-lfu, allkeys-random, volatile-random,
    /// volatile-ttl or allkeys-tinylfu [default: noeviction].
    #[arg(long, env = "CRYPTOMEM_MAXMEMORY_POLICY")]
    pub maxmemory_policy: Option<String>,
    /// Keys drawn per eviction, 1 to 64; more is closer to the policy's
    /// ideal and slower [default: 5].
    #[arg(long, env = "CRYPTOMEM_MAXMEMORY_SAMPLES")]
    pub maxmemory_samples: Option<usize>,
    /// Once the key count has grown or shrunk by an eighth and settled, copy
    /// the map nodes left on sparse pages together, so that the allocator
    /// can give the pages back [default: true].
    #[arg(long, env = "CRYPTOMEM_ACTIVE_DEFRAG")]
    pub active_defrag: Option<bool>,
}

impl Settings {
    /// Reads a TOML settings file.
    ///
    /// # Errors
    /// A message naming the file and the problem.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| file_error(e.message().to_string()))
    }

    /// Fills every unset field of `self` from `lower`.
    #[must_use]
    pub fn or(self, lower: Self) -> Self {
        Self {
            listen: self.listen.or(lower.listen),
            data: self.data.or(lower.data),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            max_connections: self.max_connections.or(lower.max_connections),
            handshake_timeout: self.handshake_timeout.or(lower.handshake_timeout),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            request_buffer_limit: self.request_buffer_limit.or(lower.request_buffer_limit),
            max_key_size: self.max_key_size.or(lower.max_key_size),
            max_value_size: self.max_value_size.or(lower.max_value_size),
            max_batch_keys: self.max_batch_keys.or(lower.max_batch_keys),
            shards: self.shards.or(lower.shards),
            threads: self.threads.or(lower.threads),
            auth_concurrency: self.auth_concurrency.or(lower.auth_concurrency),
            auth_max_failures: self.auth_max_failures.or(lower.auth_max_failures),
            auth_failure_window: self.auth_failure_window.or(lower.auth_failure_window),
            auth_lockout: self.auth_lockout.or(lower.auth_lockout),
            auth_failure_delay: self.auth_failure_delay.or(lower.auth_failure_delay),
            auth_cache: self.auth_cache.or(lower.auth_cache),
            token_hash_memory: self.token_hash_memory.or(lower.token_hash_memory),
            token_hash_passes: self.token_hash_passes.or(lower.token_hash_passes),
            fsync: self.fsync.or(lower.fsync),
            snapshot_interval: self.snapshot_interval.or(lower.snapshot_interval),
            snapshot_log_min_size: self.snapshot_log_min_size.or(lower.snapshot_log_min_size),
            snapshot_log_percentage: self.snapshot_log_percentage.or(lower.snapshot_log_percentage),
            snapshot_after_writes: self.snapshot_after_writes.or(lower.snapshot_after_writes),
            maxmemory: self.maxmemory.or(lower.maxmemory),
            maxmemory_policy: self.maxmemory_policy.or(lower.maxmemory_policy),
            maxmemory_samples: self.maxmemory_samples.or(lower.maxmemory_samples),
            active_defrag: self.active_defrag.or(lower.active_defrag),
        }
    }

    /// The built-in defaults ([`DEFAULTS`]) as a source of settings.
    pub fn built_in() -> Self {
        let text = |flag: &str| DEFAULTS.iter().find(|(f, _)| *f == flag).map(|(_, v)| (*v).to_string());
        fn number<T: std::str::FromStr>(text: Option<String>) -> Option<T> {
            text.and_then(|t| t.parse().ok())
        }
        Self {
            listen: text("listen"),
            data: text("data").map(PathBuf::from),
            metrics_listen: None,
            max_connections: number(text("max-connections")),
            handshake_timeout: text("handshake-timeout"),
            idle_timeout: text("idle-timeout"),
            request_timeout: text("request-timeout"),
            request_buffer_limit: text("request-buffer-limit"),
            max_key_size: text("max-key-size"),
            max_value_size: text("max-value-size"),
            max_batch_keys: number(text("max-batch-keys")),
            shards: None,
            threads: None,
            auth_concurrency: None,
            auth_max_failures: number(text("auth-max-failures")),
            auth_failure_window: text("auth-failure-window"),
            auth_lockout: text("auth-lockout"),
            auth_failure_delay: text("auth-failure-delay"),
            auth_cache: number(text("auth-cache")),
            token_hash_memory: text("token-hash-memory"),
            token_hash_passes: number(text("token-hash-passes")),
            fsync: text("fsync"),
            snapshot_interval: text("snapshot-interval"),
            snapshot_log_min_size: text("snapshot-log-min-size"),
            snapshot_log_percentage: number(text("snapshot-log-percentage")),
            snapshot_after_writes: number(text("snapshot-after-writes")),
            maxmemory: text("maxmemory"),
            maxmemory_policy: text("maxmemory-policy"),
            maxmemory_samples: number(text("maxmemory-samples")),
            active_defrag: number(text("active-defrag")),
        }
    }

    /// Applies defaults and checks every value.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        // Every field with a fixed default is set from here on.
        let s = self.or(Self::built_in());
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let listen_text = text(&s.listen);
        let listen: SocketAddr =
            listen_text.parse().map_err(|_| invalid("listen", format!("`{listen_text}` is not an IP:port address")))?;
        let metrics_listen = match s.metrics_listen.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                t.parse::<SocketAddr>()
                    .map_err(|_| invalid("metrics-listen", format!("`{t}` is not an IP:port address")))?,
            ),
        };
        let handshake_timeout =
            parse_duration(text(&s.handshake_timeout).as_str()).map_err(|e| invalid("handshake-timeout", e))?;
        if handshake_timeout.is_zero() {
            return Err(invalid("handshake-timeout", "must be more than 0"));
        }
        let idle = parse_duration(text(&s.idle_timeout).as_str()).map_err(|e| invalid("idle-timeout", e))?;
        let max_key_len = parse_size(text(&s.max_key_size).as_str()).map_err(|e| invalid("max-key-size", e))?;
        if !(1..=usize::from(u16::MAX)).contains(&max_key_len) {
            return Err(invalid("max-key-size", format!("{max_key_len} is outside 1..=65535")));
        }
        let max_value_len = parse_size(text(&s.max_value_size).as_str()).map_err(|e| invalid("max-value-size", e))?;
        if !(1..=HARD_MAX_VALUE_LEN).contains(&max_value_len) {
            return Err(invalid("max-value-size", format!("{max_value_len} is outside 1..={HARD_MAX_VALUE_LEN}")));
        }
        let request_timeout =
            parse_duration(text(&s.request_timeout).as_str()).map_err(|e| invalid("request-timeout", e))?;
        let request_buffer_limit =
            parse_size(text(&s.request_buffer_limit).as_str()).map_err(|e| invalid("request-buffer-limit", e))?;
        // Below this not even one request of the largest allowed size could arrive.
        let largest_request = max_value_len + max_key_len + 64 * 1024;
        if request_buffer_limit < largest_request {
            return Err(invalid(
                "request-buffer-limit",
                format!(
                    "{request_buffer_limit} is less than one largest request ({largest_request} bytes: max-value-size + max-key-size + 64KiB)"
                ),
            ));
        }
        let max_batch_keys = s.max_batch_keys.unwrap_or(crate::protocol::DEFAULT_MAX_BATCH_KEYS);
        if max_batch_keys == 0 {
            return Err(invalid("max-batch-keys", "must be at least 1"));
        }
        let max_connections = s.max_connections.unwrap_or_default();
        if max_connections == 0 {
            return Err(invalid("max-connections", "must be at least 1"));
        }
        let fsync = text(&s.fsync).as_str().parse().map_err(|e| invalid("fsync", e))?;
        let snapshot_interval =
            parse_duration(text(&s.snapshot_interval).as_str()).map_err(|e| invalid("snapshot-interval", e))?;
        if snapshot_interval.is_zero() {
            return Err(invalid("snapshot-interval", "must be more than 0"));
        }
        let snapshot_log_min_bytes =
            parse_size(&text(&s.snapshot_log_min_size)).map_err(|e| invalid("snapshot-log-min-size", e))? as u64;
        let persist = PersistConfig {
            fsync,
            snapshot_interval,
            snapshot_log_min_bytes,
            snapshot_log_percentage: s.snapshot_log_percentage.unwrap_or_default(),
            snapshot_after_writes: s.snapshot_after_writes.unwrap_or_default(),
        };
        let memory_limit = MemoryLimit {
            bytes: parse_size(&text(&s.maxmemory)).map_err(|e| invalid("maxmemory", e))? as u64,
            policy: text(&s.maxmemory_policy).parse().map_err(|e| invalid("maxmemory-policy", e))?,
            samples: s.maxmemory_samples.unwrap_or_default(),
        };
        if !(1..=64).contains(&memory_limit.samples) {
            return Err(invalid("maxmemory-samples", format!("{} is outside 1..=64", memory_limit.samples)));
        }
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        // One core is left to the log writer, snapshots and the kernel's
        // network work (and to clients on the same machine).
        let threads = s.threads.unwrap_or(cores.saturating_sub(1)).clamp(1, 1024);
        let duration =
            |value: &Option<String>, name: &'static str| parse_duration(&text(value)).map_err(|e| invalid(name, e));
        let memory = parse_size(text(&s.token_hash_memory).as_str()).map_err(|e| invalid("token-hash-memory", e))?;
        let min = HashParams::default();
        let hash = HashParams {
            m_cost_kib: u32::try_from(memory / 1024).map_err(|_| invalid("token-hash-memory", "too large"))?,
            t_cost: s.token_hash_passes.unwrap_or(min.t_cost),
            p_cost: 1,
        };
        if hash.m_cost_kib < min.m_cost_kib || hash.t_cost < min.t_cost {
            return Err(invalid("token-hash-memory/passes", "below OWASP's argon2id minimum (19MiB, 2 passes)"));
        }
        let auth = AuthConfig {
            max_concurrent: s.auth_concurrency.unwrap_or(cores / 2).max(1),
            hash,
            cache: s.auth_cache.unwrap_or_default(),
            throttle: ThrottleConfig {
                max_failures: s.auth_max_failures.unwrap_or_default().max(1),
                window: duration(&s.auth_failure_window, "auth-failure-window")?,
                lockout: duration(&s.auth_lockout, "auth-lockout")?,
                failure_delay: duration(&s.auth_failure_delay, "auth-failure-delay")?,
            },
        };
        Ok(ServerConfig {
            listen,
            data_dir: s.data.clone().unwrap_or_default(),
            metrics_listen,
            max_connections,
            handshake_timeout,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            request_timeout: (!request_timeout.is_zero()).then_some(request_timeout),
            request_buffer_limit,
            limits: Limits { max_key_len, max_value_len, max_batch_keys },
            shards: s.shards.unwrap_or_else(|| shards_for_limit(memory_limit.bytes, threads)).clamp(1, 1 << 16),
            threads,
            auth,
            clock: Clock::System,
            shutdown_grace: Duration::from_secs(5),
            persist,
            memory: memory_limit,
            active_defrag: s.active_defrag.unwrap_or_default(),
            disk: Arc::new(OsDisk),
        })
    }
}

/// The memory limit settings (changeable at run time with CONFIG SET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes; 0 = no limit.
    pub bytes: u64,
    /// What goes at the limit.
    pub policy: EvictionPolicy,
    /// Keys drawn per eviction.
    pub samples: usize,
}

/// The resolved configuration a server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served; `None` = not at all.
    pub metrics_listen: Option<SocketAddr>,
    /// Connection limit.
    pub max_connections: usize,
    /// Limit on the handshake, and again on the time to authenticate.
    pub handshake_timeout: Duration,
    /// Idle limit for authenticated connections; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Time from a request's first byte to its last; `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Bytes all connections together may hold for requests still arriving.
    pub request_buffer_limit: usize,
    /// Request size limits.
    pub limits: Limits,
    /// Store shard count.
    pub shards: usize,
    /// Threads serving connections (the `cryptomem` binary's runtime; an
    /// embedding program runs the server on its own runtime).
    pub threads: usize,
    /// Token verification, hashing and brute-force settings.
    pub auth: AuthConfig,
    /// Time source (tests use a manual clock).
    pub clock: Clock,
    /// How long shutdown waits for open connections to finish.
    pub shutdown_grace: Duration,
    /// Log and snapshot settings.
    pub persist: PersistConfig,
    /// The memory limit and what goes when it is reached.
    pub memory: MemoryLimit,
    /// Whether map nodes are moved off sparse pages once the key count
    /// settles (`store/defrag.rs`).
    pub active_defrag: bool,
    /// Where the log and snapshots are written: the real disk, or a
    /// fault-injecting one in tests.
    pub disk: Arc<dyn Disk>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        // The defaults are all valid, so resolving empty settings cannot fail.
        Settings::default().resolve().unwrap_or_else(|e| unreachable!("default settings are valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_maxmemory_lowers_the_default_shard_count_but_not_a_set_one() {
        let small = |shards: Option<usize>| {
            Settings { maxmemory: Some("8MiB".into()), threads: Some(1), shards, ..Default::default() }
                .resolve()
                .unwrap()
        };
        assert_eq!(small(None).shards, crate::store::shards_for_limit(8 << 20, 1));
        assert!(small(None).shards < crate::store::DEFAULT_SHARDS);
        assert_eq!(small(Some(4096)).shards, 4096);
    }

    #[test]
    fn threads_default_to_one_less_than_the_cores() {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        assert_eq!(Settings::default().resolve().unwrap().threads, (cores - 1).max(1));
        let one = Settings { threads: Some(0), ..Default::default() }.resolve().unwrap();
        assert_eq!(one.threads, 1, "at least one");
        let file: Settings = toml::from_str("threads = 3").unwrap();
        assert_eq!(file.resolve().unwrap().threads, 3);
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let flags = Settings { listen: Some("127.0.0.1:1".into()), ..Default::default() };
        let file: Settings =
            toml::from_str("listen = \"127.0.0.1:2\"\nidle_timeout = \"5s\"\nmax_value_size = \"1MiB\"").unwrap();
        let cfg = flags.or(file).resolve().unwrap();
        assert_eq!(cfg.listen.port(), 1);
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(cfg.limits.max_value_len, 1 << 20);
        assert_eq!(cfg.limits.max_key_len, 1024);
        assert_eq!(cfg.max_connections, 10_000);
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cases = [
            Settings { listen: Some("nowhere".into()), ..Default::default() },
            Settings { metrics_listen: Some("nowhere".into()), ..Default::default() },
            Settings { max_key_size: Some("70000".into()), ..Default::default() },
            Settings { max_value_size: Some("1GiB".into()), ..Default::default() },
            Settings { handshake_timeout: Some("0".into()), ..Default::default() },
            Settings { max_connections: Some(0), ..Default::default() },
        ];
        for (s, word) in cases.into_iter().zip([
            "listen",
            "metrics-listen",
            "max-key-size",
            "max-value-size",
            "handshake-timeout",
            "max-connections",
        ]) {
            assert!(s.resolve().unwrap_err().to_string().starts_with(word));
        }
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err(), "unknown keys are rejected");
        assert_eq!(ServerConfig::default().idle_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn every_default_is_the_one_in_the_help_and_the_readme() {
        let command = <Settings as clap::Args>::augment_args(clap::Command::new("serve"));
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        for (flag, default) in DEFAULTS {
            let arg =
                command.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap_or_else(|| panic!("--{flag}"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.contains(&format!("[default: {default}]")), "--{flag} help says: {help}");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `--{flag}` |")))
                .unwrap_or_else(|| panic!("README row for --{flag}"));
            let column = row.split('|').nth(3).unwrap_or_default().replace('`', "");
            assert!(column.trim().starts_with(default), "README says {column} for --{flag}, the code {default}");
        }
    }

    #[test]
    fn built_in_settings_agree_with_the_layers_own_defaults() {
        let resolved = Settings::default().resolve().unwrap();
        assert_eq!(resolved.persist, PersistConfig::default());
        assert_eq!(resolved.limits, Limits::default());
        assert_eq!(resolved.shards, crate::store::DEFAULT_SHARDS);
        let built_in = Settings::built_in();
        assert!(
            built_in.listen.is_some() && built_in.auth_cache == Some(true) && built_in.max_connections == Some(10_000)
        );
    }
}
