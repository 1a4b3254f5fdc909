//! Command-line interface of the `cryptomem` binary (not part of the library).

mod commands;
mod keys;
mod serve;
mod server_key;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// cryptomem: a secure, persistent in-memory cache.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// How the client commands find the server and the value key.
#[derive(Debug, clap::Args)]
pub struct ClientOpts {
    /// Credentials file (server address, server public key, token).
    #[arg(long, env = "CRYPTOMEM_CREDENTIALS", default_value = "data/credentials.toml")]
    pub credentials: PathBuf,
    /// Cluster file (several servers' credentials, see the README's "Scaling out"):
    /// each key goes to its server; DBSIZE sums, INFO, SAVE and CONFIG ask every server.
    #[arg(long, env = "CRYPTOMEM_CLUSTER", conflicts_with_all = ["server", "server_key"])]
    pub cluster: Option<PathBuf>,
    /// Server address, overriding the credentials file.
    #[arg(long, env = "CRYPTOMEM_SERVER")]
    pub server: Option<String>,
    /// Server public key (64 hex digits), overriding the credentials file.
    #[arg(long, env = "CRYPTOMEM_SERVER_KEY")]
    pub server_key: Option<String>,
    /// Value key file [default: $XDG_CONFIG_HOME/cryptomem/value.key or ~/.config/cryptomem/value.key].
    #[arg(long, env = "CRYPTOMEM_VALUE_KEY_FILE")]
    pub value_key_file: Option<PathBuf>,
    /// Older value key files that can still open values (key rotation); repeatable.
    #[arg(long)]
    pub previous_value_key_file: Vec<PathBuf>,
    /// Salt file for a passphrase-derived value key; the passphrase comes from CRYPTOMEM_PASSPHRASE.
    #[arg(long, env = "CRYPTOMEM_SALT_FILE")]
    pub salt_file: Option<PathBuf>,
    /// Send keyed hashes instead of key names: the server sees the part up to the first
    /// --key-separator and a hash of the whole name (see the README's "Hidden key names").
    #[arg(long, env = "CRYPTOMEM_HIDE_KEY_NAMES")]
    pub hide_key_names: bool,
    /// The separator ending the namespace hidden names keep in clear (one ASCII character).
    #[arg(long, default_value_t = ':')]
    pub key_separator: char,
    /// Value key file hidden names are derived from [default: the value key]; keep it the same
    /// across value key rotations, or the names change.
    #[arg(long, env = "CRYPTOMEM_NAMES_KEY_FILE")]
    pub names_key_file: Option<PathBuf>,
    /// Print values and numbers bare, for scripts.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Create a value key file (or, with --passphrase, a salt file).
    Keygen(keys::KeygenArgs),
    /// Check the connection: prints PONG.
    Ping(NoArgs),
    /// Print a key's value.
    Get(KeyArg),
    /// Print a key's version (its last change's sequence number) and value.
    Getv(KeyArg),
    /// Store a value.
    Set(SetArgs),
    /// Delete keys; prints how many existed.
    Del(DelArgs),
    /// Print 1 if the key exists, else 0.
    Exists(KeyArg),
    /// Print a key's time to live.
    Ttl(KeyArg),
    /// Set a key's time to live (e.g. 30s, 5m).
    Expire(ExpireArgs),
    /// Remove a key's time to live.
    Persist(KeyArg),
    /// Print several values.
    Mget(KeysArg),
    /// Store several values: KEY VALUE [KEY VALUE ...].
    Mset(MsetArgs),
    /// List keys (one per line) as they are when the listing starts.
    Scan(ScanArgs),
    /// Print the number of keys.
    Dbsize(NoArgs),
    /// Print server information.
    Info(NoArgs),
    /// Take a snapshot now.
    Save(NoArgs),
    /// Read or change a run-time setting (maxmemory, maxmemory-policy, maxmemory-samples).
    Config(ConfigArgs),
    /// Manage access tokens: add, list, revoke.
    Token(tokens::TokenArgs),
    /// Rotate the server's static key (offline, on the data dir), or list the accepted keys.
    ServerKey(server_key::ServerKeyArgs),
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigAction {
    /// Print a setting's value (maxmemory in bytes).
    Get {
        /// maxmemory, maxmemory-policy or maxmemory-samples.
        name: String,
    },
    /// Change a setting until the server stops (a lower maxmemory evicts at once).
    Set {
        /// maxmemory, maxmemory-policy or maxmemory-samples.
        name: String,
        /// The new value, as the flag takes it (512MiB, allkeys-lru, 5).
        value: String,
    },
}

#[derive(Debug, clap::Args)]
struct NoArgs {
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Keys asked for per round trip.
    #[arg(long, default_value_t = 1000)]
    count: u32,
}

#[derive(Debug, clap::Args)]
struct KeyArg {
    #[command(flatten)]
    opts: ClientOpts,
    /// The key.
    key: String,
}

#[derive(Debug, clap::Args)]
struct KeysArg {
    #[command(flatten)]
    opts: ClientOpts,
    /// The keys.
    #[arg(required = true)]
    keys: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The key.
    key: String,
    /// The value (text; `-` reads it from standard input).
    value: String,
    /// Expire after this long (e.g. 500ms, 30s, 5m, 1h).
    #[arg(long)]
    ttl: Option<String>,
    /// Only set if the key does not exist.
    #[arg(long, conflicts_with = "xx")]
    nx: bool,
    /// Only set if the key exists.
    #[arg(long)]
    xx: bool,
    /// Only set if the key's version is this (0: only if absent); prints the new version.
    #[arg(long, conflicts_with_all = ["nx", "xx"])]
    if_version: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct DelArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The keys.
    #[arg(required = true)]
    keys: Vec<String>,
    /// Only delete if the key's version is this (one key only).
    #[arg(long)]
    if_version: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ExpireArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// The key.
    key: String,
    /// Time to live (e.g. 30s, 5m).
    ttl: String,
}

#[derive(Debug, clap::Args)]
struct MsetArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// KEY VALUE pairs.
    #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
    pairs: Vec<String>,
    /// Expire every pair after this long.
    #[arg(long)]
    ttl: Option<String>,
}

/// Runs the parsed command: `serve` on a runtime with its configured number
/// of threads, the client commands on a single-threaded one.
///
/// # Errors
/// Any failure, with context for the user.
pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(a) => serve::run(*a),
        Command::ServerKey(a) => server_key::run(a),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run(command))
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    use commands::Op;
    let (opts, op) = match command {
        Command::Serve(_) | Command::ServerKey(_) => anyhow::bail!("not a client command"),
        Command::Keygen(a) => return keys::keygen(&a),
        Command::Token(a) => return tokens::run(a).await,
        Command::Ping(c) => (c.opts, Op::Ping),
        Command::Get(k) => (k.opts, Op::Get(k.key)),
        Command::Getv(k) => (k.opts, Op::Getv(k.key)),
        Command::Set(s) => {
            let op = Op::Set { key: s.key, value: s.value, ttl: s.ttl, nx: s.nx, xx: s.xx, if_version: s.if_version };
            (s.opts, op)
        }
        Command::Del(k) => (k.opts, Op::Del(k.keys, k.if_version)),
        Command::Exists(k) => (k.opts, Op::Exists(k.key)),
        Command::Ttl(k) => (k.opts, Op::Ttl(k.key)),
        Command::Expire(e) => (e.opts, Op::Expire(e.key, e.ttl)),
        Command::Persist(k) => (k.opts, Op::Persist(k.key)),
        Command::Mget(k) => (k.opts, Op::Mget(k.keys)),
        Command::Mset(m) => (m.opts, Op::Mset(m.pairs, m.ttl)),
        Command::Scan(a) => (a.opts, Op::Scan(a.prefix, a.count)),
        Command::Dbsize(c) => (c.opts, Op::Dbsize),
        Command::Info(c) => (c.opts, Op::Info),
        Command::Save(c) => (c.opts, Op::Save),
        Command::Config(c) => match c.action {
            ConfigAction::Get { name } => (c.opts, Op::ConfigGet(name)),
            ConfigAction::Set { name, value } => (c.opts, Op::ConfigSet(name, value)),
        },
    };
    commands::run(&opts, op).await
}
