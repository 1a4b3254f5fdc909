//! `bench`: a redis-benchmark-style load generator for a running server.
//!
//! `-c` connections, one task each. With `-P 1` a task makes one call at a
//! time; with `-P n` it sends `n` requests as one [`cryptomem_client::Pipeline`]
//! and waits for all `n` replies before sending the next batch, as
//! redis-benchmark does (each request's latency is its batch's round trip).
//! Keys are `bench:key:<n>` with `n` random below `-r`; values are `-d` bytes,
//! sealed by the client as real users do unless `--no-value-crypto`. Each test
//! stops after `-n` requests or `--duration`, whichever comes first. With
//! `--cluster FILE` each task's client is a [`ShardedClient`] over the
//! file's servers (one connection to each), and pipelines are split per
//! server as applications' are.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use cryptomem_client::value_crypto::Keyring;
use cryptomem_client::{Client, PipelineReply, SetOptions, ShardedClient, ShardedConfig};
use cryptomem_util::units::parse_duration;
use serde::Serialize;

use crate::target::Target;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Cluster file: load every server of a sharded cluster through the
    /// sharded client instead of one server.
    #[arg(long, conflicts_with_all = ["credentials", "server"])]
    cluster: Option<PathBuf>,
    /// Parallel connections (to each server, with --cluster).
    #[arg(short = 'c', default_value_t = 50)]
    clients: usize,
    /// Requests per test.
    #[arg(short = 'n', default_value_t = 100_000)]
    requests: u64,
    /// Requests in flight per connection (pipelining).
    #[arg(short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Value size in bytes (before sealing).
    #[arg(short = 'd', default_value_t = 100)]
    data_size: usize,
    /// Keyspace: keys are bench:key:0 .. bench:key:<r - 1>.
    #[arg(short = 'r', default_value_t = 100_000)]
    keyspace: u64,
    /// Tests to run, comma-separated: set, get, mixed (half each), fill (every
    /// key of the keyspace written once, in order; -n does not apply).
    #[arg(short = 't', default_value = "set,get")]
    tests: String,
    /// Stop each test after this long even if -n is not reached (e.g. 10s).
    #[arg(long)]
    duration: Option<String>,
    /// Send values unsealed, to measure the server alone.
    #[arg(long)]
    no_value_crypto: bool,
    /// Give every SET this TTL (e.g. 30s), so keys expire under the load.
    #[arg(long)]
    ttl: Option<String>,
    /// Client threads; 1 (as redis-benchmark) runs every connection on one
    /// thread, which leaves the most CPU to a server on the same machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Share one client with this many connections between the -c tasks
    /// (the client's own pool), instead of one client and connection per task.
    #[arg(long)]
    shared_client: Option<usize>,
    /// How a pipelined batch's latency is taken: `batch` times it to its
    /// last reply (the whole round trip); `first` times it to the moment
    /// the connection read its first reply, as redis-benchmark does (it
    /// stops the clock at the first read event of a batch's replies). The
    /// batch is sent the same way in both, as one pipeline. Either way every
    /// request of the batch gets the batch's figure.
    #[arg(long, value_enum, default_value_t = LatencyMode::Batch)]
    latency: LatencyMode,
    /// Run no test: open the -c connections (handshake, AUTH, one PING
    /// each), print "N connections open", and hold them idle this long (for
    /// measuring the server's memory per idle connection).
    #[arg(long)]
    idle: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LatencyMode {
    Batch,
    First,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Set,
    Get,
    Mixed,
    Fill,
}

#[derive(Debug, Serialize)]
struct Outcome {
    test: &'static str,
    requests: u64,
    errors: u64,
    seconds: f64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    clients: usize,
    pipeline: usize,
    value_bytes: usize,
    value_crypto: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let tests = args
        .tests
        .split(',')
        .map(|t| match t.trim() {
            "set" => Ok(Test::Set),
            "get" => Ok(Test::Get),
            "mixed" => Ok(Test::Mixed),
            "fill" => Ok(Test::Fill),
            other => bail!("unknown test `{other}`: use set, get, mixed or fill"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(args.clients > 0 && args.pipeline > 0 && args.keyspace > 0, "-c, -P and -r must be at least 1");
    let duration = args.duration.as_deref().map(parse_duration).transpose().map_err(anyhow::Error::msg)?;
    let ttl = args.ttl.as_deref().map(parse_duration).transpose().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(args.threads > 0, "--threads must be at least 1");
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let idle = args.idle.as_deref().map(parse_duration).transpose().map_err(anyhow::Error::msg)?;
    let outcomes = runtime.block_on(async {
        let clients = connect_all(args).await?;
        if let Some(idle) = idle {
            hold_idle(&clients, idle).await?;
            return anyhow::Ok(Vec::new());
        }
        let mut outcomes = Vec::new();
        for test in tests {
            outcomes.push(run_test(args, &clients, test, duration, ttl).await);
        }
        anyhow::Ok(outcomes)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for o in &outcomes {
            println!(
                "{:<5} {:>10.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} requests, {} errors, {:.1}s, -c {} -P {} -d {}{})",
                o.test,
                o.ops_per_sec,
                o.p50_ms,
                o.p99_ms,
                o.p999_ms,
                o.requests,
                o.errors,
                o.seconds,
                o.clients,
                o.pipeline,
                o.value_bytes,
                if o.value_crypto { "" } else { ", no value crypto" }
            );
        }
    }
    if idle.is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if outcomes.iter().all(|o| o.requests > 0 && o.errors == 0) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One server's client or a cluster's: they share method names, so
/// `with_client!` runs the same code on either.
#[derive(Clone)]
enum BenchClient {
    One(Client),
    Cluster(ShardedClient),
}

macro_rules! with_client {
    ($client:expr, $c:ident => $body:expr) => {
        match $client {
            BenchClient::One($c) => $body,
            BenchClient::Cluster($c) => $body,
        }
    };
}

/// `--idle`: one PING on each connection, then nothing for `idle`.
async fn hold_idle(clients: &[BenchClient], idle: Duration) -> anyhow::Result<()> {
    for client in clients {
        with_client!(client, c => c.ping().await)?;
    }
    println!("{} connections open", clients.len());
    std::io::Write::flush(&mut std::io::stdout())?;
    tokio::time::sleep(idle).await;
    Ok(())
}

async fn connect_all(args: &Args) -> anyhow::Result<Vec<BenchClient>> {
    let connections = args.shared_client.unwrap_or(1);
    let connect = || async {
        anyhow::Ok(match &args.cluster {
            Some(path) => {
                let mut config =
                    ShardedConfig::from_cluster_file(path)?.map_servers(|c| c.with_connections(connections));
                if !args.no_value_crypto {
                    config = config.with_keyring(Keyring::new(Target::bench_value_key()));
                }
                BenchClient::Cluster(ShardedClient::connect(config).await?)
            }
            None => {
                let config = args.target.config(!args.no_value_crypto)?.with_connections(connections);
                BenchClient::One(Target::connect(&config).await?)
            }
        })
    };
    if args.shared_client.is_some() {
        return Ok(vec![connect().await?; args.clients]);
    }
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(connect().await?);
    }
    Ok(clients)
}

/// How many of a pipeline's commands failed: a [`cryptomem_client::Pipeline`]
/// fails whole or per command, a sharded one per command.
/// What a timed pipeline's outcome says: how many of the batch's `batch`
/// requests failed (all of them when the round trip did), and when its
/// first reply was read. The two pipelines' `execute_timed` return it in
/// different shapes.
trait TimedOutcome {
    fn failures_and_first(self, batch: u64) -> (u64, Option<Instant>);
}

type Replies = Vec<cryptomem_client::Result<PipelineReply>>;

fn failed(replies: &Replies) -> u64 {
    replies.iter().filter(|r| r.is_err()).count() as u64
}

impl TimedOutcome for cryptomem_client::Result<(Replies, Option<Instant>)> {
    fn failures_and_first(self, batch: u64) -> (u64, Option<Instant>) {
        self.map_or((batch, None), |(replies, at)| (failed(&replies), at))
    }
}

impl TimedOutcome for (Replies, Option<Instant>) {
    fn failures_and_first(self, _: u64) -> (u64, Option<Instant>) {
        (failed(&self.0), self.1)
    }
}

async fn run_test(
    args: &Args,
    clients: &[BenchClient],
    test: Test,
    duration: Option<Duration>,
    ttl: Option<Duration>,
) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let value = Arc::new(vec![b'x'; args.data_size]);
    let mut slots = Vec::new();
    for (ci, client) in clients.iter().enumerate() {
        let (client, issued, value) = (client.clone(), Arc::clone(&issued), Arc::clone(&value));
        let load = Load {
            test,
            pipeline: args.pipeline as u64,
            limit: if test == Test::Fill { args.keyspace } else { args.requests },
            keyspace: args.keyspace,
            crypto: !args.no_value_crypto,
            set: SetOptions { ttl, ..SetOptions::default() },
            deadline,
            first_reply: args.latency == LatencyMode::First,
        };
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((ci as u64 + 1) << 20);
        slots.push(tokio::spawn(async move { load.run(&client, &issued, &value, seed).await }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for s in slots {
        if let Ok((l, e)) = s.await {
            all.extend(l);
            errors += e;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() - 1) as f64 * p).round() as usize;
        f64::from(all[i.min(all.len() - 1)]) / 1000.0
    };
    Outcome {
        test: match test {
            Test::Set => "SET",
            Test::Get => "GET",
            Test::Mixed => "MIXED",
            Test::Fill => "FILL",
        },
        requests: all.len() as u64,
        errors,
        seconds,
        ops_per_sec: all.len() as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        clients: clients.len(),
        pipeline: args.pipeline,
        value_bytes: args.data_size,
        value_crypto: !args.no_value_crypto,
    }
}

/// What one connection's task does.
struct Load {
    test: Test,
    pipeline: u64,
    limit: u64,
    keyspace: u64,
    crypto: bool,
    set: SetOptions,
    deadline: Option<Instant>,
    /// `--latency first`.
    first_reply: bool,
}

impl Load {
    /// Runs until the shared request count reaches the limit or the deadline
    /// passes; returns per-request latencies in microseconds and the error count.
    async fn run(&self, client: &BenchClient, issued: &AtomicU64, value: &[u8], mut rng: u64) -> (Vec<u32>, u64) {
        let mut latencies_us: Vec<u32> = Vec::new();
        let mut errors = 0u64;
        let mut key = String::new();
        loop {
            let first = issued.fetch_add(self.pipeline, Ordering::Relaxed);
            if first >= self.limit || self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let batch = self.pipeline.min(self.limit - first);
            let started = Instant::now();
            // Fill walks the keyspace in order: request `first + i` writes key `first + i`.
            let mut sequence = first;
            let mut answered = None;
            let failed = if batch == 1 {
                let write = self.next_key(&mut rng, &mut sequence, &mut key);
                u64::from(!self.one(client, write, &key, value).await)
            } else {
                with_client!(client, c => {
                    let mut p = c.pipeline();
                    for _ in 0..batch {
                        let write = self.next_key(&mut rng, &mut sequence, &mut key);
                        let queued = match (write, self.crypto) {
                            (true, true) => p.set_with(&key, value, self.set).map(drop),
                            (true, false) => p.set_raw_with(&key, value.to_vec(), self.set).map(drop),
                            (false, true) => p.get(&key).map(drop),
                            (false, false) => p.get_raw(&key).map(drop),
                        };
                        errors += u64::from(queued.is_err());
                    }
                    let (failures, first_at) = p.execute_timed().await.failures_and_first(batch);
                    if self.first_reply {
                        answered = first_at;
                    }
                    failures
                })
            };
            let took = answered.map_or_else(|| started.elapsed(), |at| at - started);
            let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
            latencies_us.extend(std::iter::repeat_n(us, batch as usize));
            errors += failed;
        }
        (latencies_us, errors)
    }

    /// Writes the next key into `key` (random, or the next in `sequence` for
    /// fill); returns whether to write it.
    fn next_key(&self, rng: &mut u64, sequence: &mut u64, key: &mut String) -> bool {
        use std::fmt::Write as _;
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let n = if self.test == Test::Fill { *sequence } else { *rng % self.keyspace };
        *sequence += 1;
        key.clear();
        let _ = write!(key, "bench:key:{n}");
        match self.test {
            Test::Set | Test::Fill => true,
            Test::Get => false,
            Test::Mixed => *rng & (1 << 40) != 0,
        }
    }

    async fn one(&self, client: &BenchClient, write: bool, key: &str, value: &[u8]) -> bool {
        with_client!(client, c => match (write, self.crypto) {
            (true, true) => c.set_with(key, value, self.set).await.is_ok(),
            (true, false) => c.set_raw_with(key, value.to_vec(), self.set).await.is_ok(),
            (false, true) => c.get(key).await.is_ok(),
            (false, false) => c.get_raw(key).await.is_ok(),
        })
    }
}
