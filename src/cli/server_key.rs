//! `cryptomem server-key rotate|list`: offline on a data dir; a running
//! server picks a rotation up within a second.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cryptomem_client::Credentials;
use cryptomem_server::server::server_keys::{self, ServerKeys};
use cryptomem_server::server::{CREDENTIALS_FILE, SERVER_PUB_FILE};
use cryptomem_util::clock::Clock;
use cryptomem_util::units::parse_duration;
use cryptomem_wire::secure::parse_public_key;

#[derive(Debug, clap::Args)]
pub struct ServerKeyArgs {
    #[command(subcommand)]
    command: ServerKeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ServerKeyCommand {
    /// Make a new server key; the old one stays accepted for the grace period.
    Rotate {
        /// The server's data dir.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// How long handshakes to the old key keep working (e.g. 1h, 7d); keys retired
        /// earlier stop no later than this either (0 ends every old key at once).
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Show the keys the server accepts and until when.
    List {
        /// The server's data dir.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
}

pub fn run(args: ServerKeyArgs) -> anyhow::Result<ExitCode> {
    let now = Clock::System.now_ms();
    match args.command {
        ServerKeyCommand::Rotate { data, grace } => {
            let grace = parse_duration(&grace).map_err(anyhow::Error::msg).context("--grace")?;
            rotate(&data, grace, now)
        }
        ServerKeyCommand::List { data } => {
            let keys =
                ServerKeys::load(&data).with_context(|| format!("cannot read the keys of {}", data.display()))?;
            println!("current  {}", keys.current.public_hex());
            for r in &keys.retired {
                let state = if r.until_unix_ms > now { "accepted for" } else { "expired" };
                let left = Duration::from_millis(r.until_unix_ms.abs_diff(now) / 1000 * 1000);
                println!("retired  {}  {state} {}", r.identity.public_hex(), humanize(left));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rotate(data: &Path, grace: Duration, now: u64) -> anyhow::Result<ExitCode> {
    let rotation = server_keys::rotate(data, grace, now)
        .with_context(|| format!("cannot rotate the server key of {}", data.display()))?;
    println!("new server key: {}  (in {}/{SERVER_PUB_FILE})", rotation.new_public, data.display());
    if grace.is_zero() {
        println!("old server key: {}  no longer accepted", rotation.old_public);
    } else {
        println!("old server key: {}  accepted for {} more", rotation.old_public, humanize(grace));
    }
    let path = data.join(CREDENTIALS_FILE);
    match Credentials::load(&path) {
        Ok(mut credentials) => {
            let mut pins = rotation.accepted.iter().map(|k| parse_public_key(k));
            credentials.server_public_key = pins.next().context("no current key")??;
            credentials.previous_server_public_keys = pins.collect::<Result<_, _>>()?;
            credentials.save(&path).with_context(|| format!("cannot update {}", path.display()))?;
            println!("credentials:    {} now pins the new key first, then the ones still accepted", path.display());
        }
        Err(e) => println!("credentials:    not updated ({e})"),
    }
    println!("a running server accepts the new key within a second; open connections are not affected.");
    println!("give clients the new server.pub (or credentials) before the grace period ends.");
    Ok(ExitCode::SUCCESS)
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}
