//! `hostile`: a soak of hostile connections against a running server on
//! loopback, while an honest client keeps working.
//!
//! For `--duration` the tool holds `--idle` connections that send nothing
//! (all opened in the first seconds), and spreads over the first half of
//! the run: `--slow` connections sending a valid handshake opening one byte
//! per second, `--garbage` openings of random bytes, `--garbage-records`
//! completed handshakes followed by random bytes, `--big-values`
//! authenticated SETs announcing a `--big-value-size` value sent at
//! `--trickle-rate` bytes per second, and `--wrong-auth` AUTHs with wrong
//! tokens sent in parallel waves of 50. Every connection ends by the end of
//! the run; how each ended is counted per kind (the server's rejection,
//! error code, plain close, or still open when the run ended).
//!
//! Before the attack (`--baseline`) and during it, one honest connection does SET then GET (checking the value) in
//! a loop, and a fresh connection is made once a second; both count errors
//! and give latency percentiles. The server's RSS (found by the port it
//! listens on, or `--pid`) is sampled every 200 ms: before the attack, its
//! peak, and `--settle` after every hostile connection closed.
//!
//! Hostile connections come from 127.0.0.2 (wrong AUTHs from 127.0.0.3)
//! when the server is on IPv4 loopback, so the server's per-address AUTH
//! lockout meets them as it would meet attackers elsewhere, and the honest
//! client on 127.0.0.1 is not locked out with them.
//!
//! Exit status 1 when the honest client saw an error, a fresh connection
//! failed, or the server process went away. Loopback addresses only: this
//! is a test of your own server, never of someone else's.

mod attacks;
mod proc_stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use attacks::{Ctx, Kind};
use bytes::Bytes;
use cryptomem_client::Client;
use cryptomem_util::units::{parse_duration, parse_size};
use cryptomem_wire::protocol::{Request, encode_request};
use serde::Serialize;

use crate::target::Target;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// How long the attack lasts (every hostile connection ends by then).
    #[arg(long, default_value = "120s")]
    duration: String,
    /// Connections that connect and send nothing, held all run.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Connections sending a handshake opening one byte per second.
    #[arg(long, default_value_t = 200)]
    slow: usize,
    /// Connections opening with random bytes.
    #[arg(long, default_value_t = 1000)]
    garbage: usize,
    /// Completed handshakes followed by random bytes.
    #[arg(long, default_value_t = 500)]
    garbage_records: usize,
    /// Authenticated SETs announcing a big value sent slowly.
    #[arg(long, default_value_t = 20)]
    big_values: usize,
    /// Value size the big SETs announce.
    #[arg(long, default_value = "16MiB")]
    big_value_size: String,
    /// Bytes per second each big SET sends.
    #[arg(long, default_value = "4KiB")]
    trickle_rate: String,
    /// AUTH attempts with wrong tokens (in parallel waves of 50).
    #[arg(long, default_value_t = 500)]
    wrong_auth: usize,
    /// The server's process id (found from the listening port otherwise).
    #[arg(long)]
    pid: Option<u32>,
    /// How long the honest client runs alone first, for a baseline to
    /// compare its latency under attack with.
    #[arg(long, default_value = "5s")]
    baseline: String,
    /// How long after the attack to measure RSS again.
    #[arg(long, default_value = "5s")]
    settle: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    seconds: f64,
    server_pid: Option<u32>,
    rss_kib_before: Option<u64>,
    rss_kib_peak: Option<u64>,
    rss_kib_after: Option<u64>,
    server_alive: bool,
    /// Per kind: connections made, then outcome label -> count.
    attacks: BTreeMap<Kind, BTreeMap<String, u64>>,
    /// The honest client alone, before the attack.
    baseline: Honest,
    /// The honest client during the attack.
    honest: Honest,
}

#[derive(Debug, Default, Serialize)]
struct Honest {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    fresh_connections: u64,
    fresh_connection_failures: u64,
    fresh_connection_p99_ms: f64,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(soak(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    let ok = report.server_alive
        && [&report.baseline, &report.honest].iter().all(|h| h.errors == 0 && h.fresh_connection_failures == 0);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn soak(args: &Args) -> anyhow::Result<Report> {
    let duration = parse_duration(&args.duration).context("--duration")?;
    let settle = parse_duration(&args.settle).context("--settle")?;
    let baseline = parse_duration(&args.baseline).context("--baseline")?;
    let big_value_len = parse_size(&args.big_value_size).context("--big-value-size")?;
    if big_value_len > 256 << 20 {
        bail!("--big-value-size is at most 256MiB (the tool holds one copy)");
    }
    let trickle_rate = parse_size(&args.trickle_rate).context("--trickle-rate")?;
    let config = args.target.config(true)?;
    let addr = loopback_addr(&config.server).await?;
    let wanted = args.idle + args.slow + args.garbage + args.garbage_records + args.big_values + 50 + 64;
    if let Some(limit) = proc_stats::open_file_limit()
        && (wanted as u64) > limit
    {
        bail!("this run needs about {wanted} open files, the limit is {limit}: raise it (ulimit -n) or ask for fewer");
    }
    let pid = args.pid.or_else(|| proc_stats::listener_pid(addr.port()));
    if pid.is_none() {
        eprintln!("warning: cannot find the process listening on port {}: RSS not measured (pass --pid)", addr.port());
    }
    let honest = Target::connect(&config).await.context("the honest client cannot connect before the attack")?;

    let (honest, baseline) = honest_load(honest, config.clone(), Instant::now() + baseline).await;
    let mut report =
        Report { server_pid: pid, rss_kib_before: pid.and_then(proc_stats::rss_kib), baseline, ..Report::default() };
    let started = Instant::now();
    let end = started + duration;
    let ctx = Arc::new(Ctx {
        addr,
        server_key: config.server_public_key,
        token: Bytes::from(config.token.expose().as_bytes().to_vec()),
        end,
        big_frame: Arc::new(big_set_frame(big_value_len)?),
        trickle_rate,
    });

    let peak = Arc::new(AtomicU64::new(report.rss_kib_before.unwrap_or(0)));
    let gone = Arc::new(AtomicBool::new(false));
    let sampler = pid.map(|pid| tokio::spawn(sample_rss(pid, Arc::clone(&peak), Arc::clone(&gone))));
    let honest_task = tokio::spawn(honest_load(honest, config.clone(), end));

    let mut attackers = tokio::task::JoinSet::new();
    let mut seed = 0u64;
    let plan = [
        (Kind::Idle, args.idle),
        (Kind::Slow, args.slow),
        (Kind::Garbage, args.garbage),
        (Kind::GarbageRecords, args.garbage_records),
        (Kind::BigValue, args.big_values),
        (Kind::WrongAuth, args.wrong_auth),
    ];
    for (kind, count) in plan {
        for i in 0..count {
            seed += 1;
            let delay = start_delay(kind, i, count, duration);
            let ctx = Arc::clone(&ctx);
            attackers.spawn(async move {
                tokio::time::sleep(delay).await;
                (kind, attacks::run(kind, ctx, seed).await)
            });
        }
    }
    let mut attacks: BTreeMap<Kind, BTreeMap<String, u64>> = BTreeMap::new();
    let deadline = end + Duration::from_secs(10);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline.into(), attackers.join_next()).await {
        if let Ok((kind, label)) = joined {
            *attacks.entry(kind).or_default().entry(label).or_default() += 1;
        }
    }
    let stuck = attackers.len() as u64;
    if stuck > 0 {
        attackers.abort_all();
        *attacks.entry(Kind::Idle).or_default().entry("tool's task stuck past the end".into()).or_default() += stuck;
    }
    report.honest = honest_task.await.context("honest client task")?.1;
    report.seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    report.attacks = attacks;
    report.rss_kib_peak = pid.map(|_| peak.load(Ordering::Relaxed));
    report.rss_kib_after = pid.and_then(proc_stats::rss_kib);
    report.server_alive = !gone.load(Ordering::Relaxed) && pid.is_none_or(|pid| proc_stats::rss_kib(pid).is_some());
    Ok(report)
}

/// The server address, resolved, if it is on loopback.
async fn loopback_addr(server: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host(server).await.with_context(|| format!("cannot resolve {server}"))?.collect();
    match addrs.first() {
        Some(addr) if addrs.iter().all(|a| a.ip().is_loopback()) => Ok(*addr),
        _ => bail!("{server} is not a loopback address: `hostile` only attacks a server on this machine"),
    }
}

/// Idle connections open in the first two seconds and stay; the other
/// kinds spread evenly over the first half of the run; wrong AUTHs come
/// in waves of 50 at once.
fn start_delay(kind: Kind, i: usize, count: usize, duration: Duration) -> Duration {
    let spread = |slot: usize, slots: usize, over: Duration| over.mul_f64(slot as f64 / slots.max(1) as f64);
    match kind {
        Kind::Idle => spread(i, count, Duration::from_secs(2).min(duration / 4)),
        Kind::WrongAuth => spread(i / 50, count.div_ceil(50), duration / 2),
        _ => spread(i, count, duration / 2),
    }
}

/// A SET of `len` bytes, encoded: what a big-value attack trickles.
fn big_set_frame(len: usize) -> anyhow::Result<Vec<u8>> {
    let request = Request::Set {
        key: Bytes::from_static(b"hostile:big"),
        value: Bytes::from(vec![0x5a; len]),
        ttl: None,
        condition: Default::default(),
    };
    let mut frame = Vec::with_capacity(len + 64);
    encode_request(&request, &mut frame).context("encoding the big SET")?;
    Ok(frame)
}

async fn sample_rss(pid: u32, peak: Arc<AtomicU64>, gone: Arc<AtomicBool>) {
    loop {
        match proc_stats::rss_kib(pid) {
            Some(kib) => {
                peak.fetch_max(kib, Ordering::Relaxed);
            }
            None => gone.store(true, Ordering::Relaxed),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SET then GET (checked) in a loop on one connection, and a fresh
/// connection with a PING once a second, until `end`.
async fn honest_load(client: Client, config: cryptomem_client::ClientConfig, end: Instant) -> (Client, Honest) {
    let mut h = Honest::default();
    let mut latencies = Vec::new();
    let mut fresh = Vec::new();
    let mut next_fresh = Instant::now();
    let fail = |h: &mut Honest, what: String| {
        h.errors += 1;
        h.first_error.get_or_insert(what);
    };
    let mut i = 0u64;
    while Instant::now() < end {
        let key = format!("hostile:honest:{}", i % 1000);
        let value = i.to_be_bytes().repeat(12);
        let t = Instant::now();
        let set = client.set(&key, &value).await;
        latencies.push(t.elapsed());
        let t = Instant::now();
        let got = client.get(&key).await;
        latencies.push(t.elapsed());
        h.requests += 2;
        match (set, got) {
            (Ok(()), Ok(Some(v))) if v == value => {}
            (Err(e), _) | (_, Err(e)) => fail(&mut h, e.to_string()),
            (_, Ok(other)) => fail(&mut h, format!("GET {key} returned {other:?}, not what was set")),
        }
        if Instant::now() >= next_fresh {
            next_fresh += Duration::from_secs(1);
            let t = Instant::now();
            let ok = match Client::connect(config.clone()).await {
                Ok(c) => c.ping().await.is_ok(),
                Err(_) => false,
            };
            fresh.push(t.elapsed());
            h.fresh_connections += 1;
            if !ok {
                h.fresh_connection_failures += 1;
            }
        }
        i += 1;
    }
    h.p50_ms = percentile_ms(&mut latencies, 0.50);
    h.p99_ms = percentile_ms(&mut latencies, 0.99);
    h.max_ms = percentile_ms(&mut latencies, 1.0);
    h.fresh_connection_p99_ms = percentile_ms(&mut fresh, 0.99);
    (client, h)
}

fn percentile_ms(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let at = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[at.min(samples.len() - 1)].as_secs_f64() * 1000.0
}

fn print_text(r: &Report) {
    let kib = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("{:.0} s against pid {}", r.seconds, r.server_pid.map_or_else(|| "?".into(), |p| p.to_string()));
    println!(
        "server RSS: before {}, peak {}, after {}",
        kib(r.rss_kib_before),
        kib(r.rss_kib_peak),
        kib(r.rss_kib_after)
    );
    println!("server alive: {}", if r.server_alive { "yes" } else { "NO" });
    for (kind, outcomes) in &r.attacks {
        let total: u64 = outcomes.values().sum();
        println!("{}: {total}", serde_json::to_string(kind).unwrap_or_default().trim_matches('"'));
        for (label, n) in outcomes {
            println!("  {n:>6}  {label}");
        }
    }
    for (when, h) in [("alone", &r.baseline), ("under attack", &r.honest)] {
        println!(
            "honest client {when}: {} requests, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             fresh connections: {} made, {} failed, p99 {:.2} ms",
            h.requests,
            h.errors,
            h.p50_ms,
            h.p99_ms,
            h.max_ms,
            h.fresh_connections,
            h.fresh_connection_failures,
            h.fresh_connection_p99_ms
        );
        if let Some(e) = &h.first_error {
            println!("  first error: {e}");
        }
    }
}
