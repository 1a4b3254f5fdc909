//! `cryptomem serve`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cryptomem_client::Credentials;
use cryptomem_server::persist::PersistError;
use cryptomem_server::server::{DataDir, InitReport};
use cryptomem_server::server::{Server, ServerError, Settings};
use tracing_subscriber::EnvFilter;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    settings: Settings,
    /// TOML config file (flags and CRYPTOMEM_* variables override it).
    #[arg(long, env = "CRYPTOMEM_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info`, `debug`, `cryptomem=trace` (RUST_LOG overrides it).
    #[arg(long, env = "CRYPTOMEM_LOG", default_value = "info")]
    log: String,
}

/// Reads the configuration, then serves on a runtime with its `threads`.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&args.log)).context("bad --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = args.settings.or(file).resolve()?;
    let runtime = cryptomem_server::server::runtime(config.threads).context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: cryptomem_server::server::ServerConfig) -> anyhow::Result<ExitCode> {
    let (data, init) = DataDir::open_or_init(&config.data_dir, config.auth.hash)
        .with_context(|| format!("cannot open data dir {}", config.data_dir.display()))?;
    let data_path = config.data_dir.display().to_string();
    let server = Server::bind(config, data).await.map_err(|e| match e {
        ServerError::Persist(PersistError::Corrupted { .. }) => anyhow::anyhow!(
            "{e}\nnothing was changed. `cryptomem-tool verify --data {data_path}` shows every problem; \
             `cryptomem-tool repair --data {data_path}` cuts a damaged log at its last good record (keeping a backup)"
        ),
        other => other.into(),
    })?;
    let addr = server.local_addr().context("cannot read the listen address")?;
    match init {
        Some(report) => announce_new_data_dir(server.data_dir(), &report, addr),
        None => follow_listen_address(server.data_dir(), addr),
    }
    // A fatal log failure has been logged with the records it concerns; the
    // exit status tells a service manager to restart (once the disk works).
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the credentials file and shows the admin token, once, on stdout
/// (never through the log). The token is shown even when the file cannot be
/// written (a full disk): its hash is already in `tokens.toml`, so this is
/// the only chance to learn it.
fn announce_new_data_dir(data: &DataDir, report: &InitReport, addr: SocketAddr) {
    let credentials = Credentials {
        server: connectable(addr).to_string(),
        server_public_key: data.identity().public(),
        token: report.admin_token.clone(),
        previous_server_public_keys: Vec::new(),
    };
    let path = data.credentials_path();
    let saved = credentials.save(&path);
    let root = data.root().display();
    println!("cryptomem: initialised data dir {root}");
    println!("  server public key: {}  (in {root}/server.pub; clients pin it)", data.identity().public_hex());
    println!("  admin token:       {}", report.admin_token.expose().as_str());
    println!("                     shown once; only its argon2id hash is kept, in {root}/tokens.toml");
    match saved {
        Ok(()) => {
            println!("  credentials:       {} (mode 0600; the cryptomem CLI reads it by default)", path.display())
        }
        Err(e) => {
            println!("  credentials:       NOT written; keep the admin token above, it is the only copy");
            eprintln!("error: cannot write {}: {}", path.display(), cryptomem_util::error_text(&e));
        }
    }
}

/// Keeps `credentials.toml` true when the server listens somewhere else
/// than the address the file names (a new `--listen`, or port 0): the file
/// is rewritten with the new address, atomically and with mode 0600, its key
/// and token unchanged. A missing or unreadable file is left alone.
fn follow_listen_address(data: &DataDir, addr: SocketAddr) {
    let path = data.credentials_path();
    let Ok(mut credentials) = Credentials::load(&path) else { return };
    let now = connectable(addr).to_string();
    if credentials.server == now {
        return;
    }
    let before = std::mem::replace(&mut credentials.server, now.clone());
    match credentials.save(&path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), from = %before, to = %now, "credentials file follows the listen address")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot update the credentials file's server address")
        }
    }
}

/// The address a local client should dial: a wildcard listen address becomes loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
