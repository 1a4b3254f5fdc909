//! `bench-auth`: how many clients per second can connect, finish the Noise
//! handshake, AUTH, PING and close, for one known token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cryptomem_client::Credentials;
use cryptomem_client::{Client, ClientConfig};
use cryptomem_util::units::parse_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credentials file (server, public key, token).
    #[arg(long, default_value = "data/credentials.toml")]
    credentials: PathBuf,
    /// Server address, overriding the credentials file.
    #[arg(long)]
    server: Option<String>,
    /// Connections opened in parallel.
    #[arg(short = 'c', long, default_value_t = 4)]
    concurrency: usize,
    /// How long to run (e.g. 5s).
    #[arg(long, default_value = "5s")]
    duration: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: &Args) -> anyhow::Result<ExitCode> {
    let creds = Credentials::load(&args.credentials)?;
    let server = args.server.clone().unwrap_or(creds.server.clone());
    let config = ClientConfig::new(server.clone(), creds.server_public_key, creds.token);
    let duration = parse_duration(&args.duration).map_err(anyhow::Error::msg)?;
    // One connection first, so a wrong setup fails loudly instead of counting errors.
    Client::connect(config.clone()).await.with_context(|| format!("cannot connect to {server}"))?.ping().await?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match Client::connect(config.clone()).await {
                        Ok(c) => c.ping().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i.min(latencies.len() - 1)]
    };
    println!(
        "connect+handshake+AUTH+PING+close: {:.0} per second ({} in {:.1}s, {} in parallel, {errors} errors)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        elapsed.as_secs_f64(),
        args.concurrency
    );
    println!("latency p50 {:?}  p99 {:?}  max {:?}", pct(0.5), pct(0.99), pct(1.0));
    Ok(if latencies.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
