//! `cryptomem-tool`: offline work on a cryptomem data directory.
//!
//! Today it inspects a data dir's identity and token table. Snapshot and log
//! inspection, `verify`, `compact` and `repair` arrive with persistence.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cryptomem::auth::TokenTable;
use cryptomem::persist::data_dir::{CREDENTIALS_FILE, SERVER_KEY_FILE, SERVER_PUB_FILE, TOKENS_FILE};
use cryptomem::secure::ServerIdentity;

/// Offline tool for cryptomem data directories.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what a data dir holds: server public key, tokens (ids, roles,
    /// labels; never hashes or secrets) and file permissions. Read-only.
    Inspect {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Inspect { data } => inspect(&data),
    }
}

fn inspect(data: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(data.is_dir(), "{} is not a directory", data.display());
    let identity = ServerIdentity::load(&data.join(SERVER_KEY_FILE)).context("server key")?;
    let tokens = TokenTable::load(&data.join(TOKENS_FILE)).context("token table")?;
    println!("data dir:          {}", data.display());
    println!("server public key: {}", identity.public_hex());
    println!("tokens:            {}", tokens.records().len());
    for t in tokens.records() {
        println!(
            "  {}  {:<5}  created {}  {}",
            t.id,
            format!("{:?}", t.role).to_lowercase(),
            t.created_unix_ms,
            t.label
        );
    }
    let mut problems = 0;
    for (file, secret) in
        [(SERVER_KEY_FILE, true), (TOKENS_FILE, true), (CREDENTIALS_FILE, true), (SERVER_PUB_FILE, false)]
    {
        let path = data.join(file);
        let Ok(meta) = std::fs::metadata(&path) else {
            println!("file {file:<17} missing");
            continue;
        };
        let mode = file_mode(&meta);
        let loose = secret && mode & 0o077 != 0;
        problems += usize::from(loose);
        println!(
            "file {file:<17} {} bytes, mode {mode:o}{}",
            meta.len(),
            if loose { "  WARNING: readable by others; chmod 600" } else { "" }
        );
    }
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> u32 {
    0o600
}
