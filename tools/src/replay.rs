//! `replay`: a cache-aside request trace against cryptomem or Redis, for hit
//! ratios under a memory limit (`tools/compare-redis.sh` suite `eviction`).
//!
//! The trace ([`trace`]) is a list of key numbers; key `n` is named `t:<n>`.
//! `-c` connections take the trace in order, `-P` requests at a time: one
//! pipelined GET per request, then one pipelined SET (`-d` bytes, sealed by
//! the client for cryptomem) for each miss, as an application filling its
//! cache on a miss does. The hit ratio is hits over GETs for the whole trace,
//! cold start included. Redis is reached over plain TCP ([`resp`]), so its
//! ops/s leave out the TLS cryptomem's channel pays for.

mod resp;
pub mod simulate;
pub mod trace;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use cryptomem_client::{Client, ClientConfig, PipelineReply};
use cryptomem_server::store::EvictionPolicy;
use serde::Serialize;

use crate::target::Target;
use resp::Redis;
use trace::{Shape, Spec};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The cryptomem server to replay against.
    #[command(flatten)]
    target: Target,
    /// Replay against Redis at this address (plain TCP) instead of cryptomem.
    #[arg(long)]
    redis: Option<String>,
    /// The trace.
    #[arg(long, value_enum, default_value = "zipf")]
    trace: Shape,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u32,
    /// Requests (GETs) in the trace.
    #[arg(short = 'n', default_value_t = 2_000_000)]
    requests: u64,
    /// Zipf exponent.
    #[arg(long, default_value_t = 0.99)]
    alpha: f64,
    /// Keys each scan of `--trace scan` reads.
    #[arg(long, default_value_t = 200_000)]
    scan_len: u64,
    /// Requests per period of `--trace scan`; each ends with one scan.
    #[arg(long, default_value_t = 1_000_000)]
    scan_period: u64,
    /// Seed of the trace.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Parallel connections.
    #[arg(short = 'c', default_value_t = 32)]
    clients: usize,
    /// Requests each connection takes at a time (pipelined).
    #[arg(short = 'P', default_value_t = 16)]
    pipeline: usize,
    /// Value size in bytes (before sealing).
    #[arg(short = 'd', default_value_t = 100)]
    data_size: usize,
    /// Replay into an in-process store with this memory limit instead of
    /// a server (see below): hit ratios in seconds, no network or
    /// encryption, a simulated clock.
    #[arg(long, value_name = "MAXMEMORY", value_parser = parse_limit)]
    simulate: Option<u64>,
    /// The simulated store's eviction policy.
    #[arg(long, requires = "simulate", default_value = "allkeys-tinylfu")]
    policy: EvictionPolicy,
    /// The simulated store's draws per eviction (the server's default if not given).
    #[arg(long, requires = "simulate")]
    samples: Option<usize>,
    /// Requests per simulated millisecond.
    #[arg(long, requires = "simulate", default_value_t = 300)]
    rate: u64,
    /// Write the trace to this file (each key number as 4 bytes,
    /// little-endian) and replay nothing: for offline analysis such as
    /// `tools/trace-bounds.py`.
    #[arg(long, value_name = "FILE")]
    write_trace: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_limit(text: &str) -> Result<u64, String> {
    cryptomem_util::units::parse_size(text).map(|n| n as u64).map_err(|e| e.to_string())
}

#[derive(Debug, Serialize)]
struct Outcome {
    target: &'static str,
    trace: String,
    requests: u64,
    hits: u64,
    hit_ratio: f64,
    /// GETs and SETs.
    operations: u64,
    seconds: f64,
    ops_per_sec: f64,
    errors: u64,
}

impl Outcome {
    /// From a run's `(hits, operations, errors)` over `requests` GETs.
    fn new(target: &'static str, args: &Args, requests: u64, counts: (u64, u64, u64), seconds: f64) -> Self {
        let (hits, operations, errors) = counts;
        Self {
            target,
            trace: format!("{:?}", args.trace).to_lowercase(),
            requests,
            hits,
            hit_ratio: hits as f64 / requests.max(1) as f64,
            operations,
            seconds,
            ops_per_sec: operations as f64 / seconds,
            errors,
        }
    }
}

/// One connection to either server.
enum Conn {
    Cryptomem(Client),
    Redis(Redis),
}

impl Conn {
    /// GETs `keys`; whether each was found.
    async fn get_all(&mut self, keys: &[&[u8]]) -> anyhow::Result<Vec<bool>> {
        match self {
            Conn::Redis(r) => Ok(r.get_all(keys).await?),
            Conn::Cryptomem(c) => {
                let mut p = c.pipeline();
                for k in keys {
                    p.get(k)?;
                }
                p.execute()
                    .await?
                    .into_iter()
                    .map(|r| match r? {
                        PipelineReply::Value(v) => Ok(v.is_some()),
                        other => anyhow::bail!("unexpected reply to GET: {other:?}"),
                    })
                    .collect()
            }
        }
    }

    /// SETs each key to `value`.
    async fn set_all(&mut self, keys: &[&[u8]], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Redis(r) => {
                let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (*k, value)).collect();
                Ok(r.set_all(&pairs).await?)
            }
            Conn::Cryptomem(c) => {
                let mut p = c.pipeline();
                for k in keys {
                    p.set(k, value)?;
                }
                for r in p.execute().await? {
                    r?;
                }
                Ok(())
            }
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0 && args.pipeline > 0 && args.keys > 0, "-c, -P and --keys must be at least 1");
    anyhow::ensure!(args.scan_len <= args.scan_period, "--scan-len must not exceed --scan-period");
    let spec = Spec {
        shape: args.trace,
        keys: args.keys,
        requests: args.requests,
        alpha: args.alpha,
        scan_len: args.scan_len,
        scan_period: args.scan_period,
        seed: args.seed,
    };
    let trace = Arc::new(trace::generate(&spec));
    if let Some(path) = &args.write_trace {
        let bytes: Vec<u8> = trace.iter().flat_map(|k| k.to_le_bytes()).collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = match args.simulate {
        Some(limit) => simulated(args, &trace, limit)?,
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(replay(args, trace))?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!(
            "{} {}: hit ratio {:.4} ({} of {} GETs), {:.0} ops/s ({} GETs and SETs in {:.1}s), {} errors",
            outcome.target,
            outcome.trace,
            outcome.hit_ratio,
            outcome.hits,
            outcome.requests,
            outcome.ops_per_sec,
            outcome.operations,
            outcome.seconds,
            outcome.errors
        );
    }
    Ok(if outcome.errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn simulated(args: &Args, trace: &[u32], limit: u64) -> anyhow::Result<Outcome> {
    let settings = simulate::Settings { limit, policy: args.policy, samples: args.samples, rate: args.rate };
    let started = Instant::now();
    let counts = simulate::run(trace, args.data_size, settings)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Outcome::new("simulated", args, trace.len() as u64, (counts.hits, counts.operations, 0), seconds))
}

async fn connect(args: &Args, config: Option<&ClientConfig>) -> anyhow::Result<Conn> {
    match (&args.redis, config) {
        (Some(addr), _) => {
            Ok(Conn::Redis(Redis::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?))
        }
        (None, Some(config)) => Ok(Conn::Cryptomem(Target::connect(config).await?)),
        (None, None) => anyhow::bail!("no server to replay against"),
    }
}

async fn replay(args: &Args, trace: Arc<Vec<u32>>) -> anyhow::Result<Outcome> {
    let config = if args.redis.is_none() { Some(args.target.config(true)?) } else { None };
    let mut conns = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        conns.push(connect(args, config.as_ref()).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'x'; args.data_size]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (trace, next, value, batch) = (Arc::clone(&trace), Arc::clone(&next), Arc::clone(&value), args.pipeline);
        tasks.push(tokio::spawn(async move {
            let (mut hits, mut ops, mut errors) = (0u64, 0u64, 0u64);
            loop {
                let first = next.fetch_add(batch as u64, Ordering::Relaxed) as usize;
                if first >= trace.len() {
                    break;
                }
                let names: Vec<Vec<u8>> = trace[first..(first + batch).min(trace.len())]
                    .iter()
                    .map(|n| format!("t:{n}").into_bytes())
                    .collect();
                let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                ops += keys.len() as u64;
                let found = match conn.get_all(&keys).await {
                    Ok(found) => found,
                    Err(_) => {
                        errors += keys.len() as u64;
                        continue;
                    }
                };
                hits += found.iter().filter(|&&f| f).count() as u64;
                let missed: Vec<&[u8]> = keys.iter().zip(&found).filter(|(_, f)| !**f).map(|(k, _)| *k).collect();
                if !missed.is_empty() {
                    ops += missed.len() as u64;
                    if conn.set_all(&missed, &value).await.is_err() {
                        errors += missed.len() as u64;
                    }
                }
            }
            (hits, ops, errors)
        }));
    }
    let (mut hits, mut operations, mut errors) = (0, 0, 0);
    for t in tasks {
        let (h, o, e) = t.await?;
        hits += h;
        operations += o;
        errors += e;
    }
    let target = if args.redis.is_some() { "redis" } else { "cryptomem" };
    Ok(Outcome::new(target, args, trace.len() as u64, (hits, operations, errors), started.elapsed().as_secs_f64()))
}
