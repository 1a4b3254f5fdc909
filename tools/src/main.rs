//! `cryptomem-tool`: offline work on a cryptomem data directory, like
//! `redis-check-aof` / `redis-check-rdb`.
//!
//! `inspect` and `verify` only read, so they are safe next to a running
//! server (whose newest log segment may then show a torn tail: it is being
//! written). `compact` and `repair` modify files and refuse to run while a
//! server holds the data dir's lock.
//!
//! `bench` loads a running server like redis-benchmark; `bench-auth` measures
//! how fast clients can connect and authenticate; `replay` measures hit
//! ratios of a cache-aside trace under a memory limit.
//!
//! Exit status: 0 clean; 1 a problem was found (or the user declined);
//! 2 `inspect` found key files readable by others.
#![forbid(unsafe_code)]

mod bench;
mod bench_auth;
mod compact;
mod hostile;
mod inspect;
mod repair;
mod replay;
mod state;
mod target;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Offline tool for cryptomem data directories.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show snapshots, log segments, key counts, tokens and file permissions (read-only; never decrypts).
    Inspect {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also list every key with its value size and expiry.
        #[arg(long)]
        keys: bool,
    },
    /// Check every CRC and record (read-only); exit 0 when clean.
    Verify {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Replace the snapshot and log with one new snapshot of the current state (server stopped).
    Compact {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Load a running server like redis-benchmark: ops/s and p50/p99/p99.9 per test.
    Bench(bench::Args),
    /// Replay a cache-aside trace (GET; SET on a miss) against cryptomem or Redis: hit ratio and ops/s.
    Replay(replay::Args),
    /// Measure connect + handshake + AUTH + PING + close per second against a running server.
    BenchAuth(bench_auth::Args),
    /// Attack a server on this machine with hostile connections while an honest client works; report RSS and outcomes.
    Hostile(hostile::Args),
    /// Cut a damaged log at its last good record, keeping the cut bytes as a backup (server stopped).
    Repair {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().command {
        Command::Inspect { data, json, keys } => inspect::run(&data, json, keys),
        Command::Verify { data } => verify::run(&data),
        Command::Compact { data } => compact::run(&data),
        Command::Repair { data, yes } => repair::run(&data, yes),
        Command::BenchAuth(args) => bench_auth::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Hostile(args) => hostile::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cryptomem_util::error_text(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
