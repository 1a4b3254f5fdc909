//! `bench` and `bench-auth` run against a live server and report non-zero rates.

mod common;

use cryptomem_client::Credentials;

async fn serve(tmp: &std::path::Path) -> std::path::PathBuf {
    common::serve(tmp, |_| {}).await
}

async fn tool(args: Vec<String>) -> String {
    let out = common::run_tool(args).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Runs `bench ARGS --json --credentials CREDS`; its report.
async fn bench(args: &[&str], creds: &std::path::Path) -> serde_json::Value {
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    args.extend(["--json".into(), "--credentials".into(), creds.display().to_string()]);
    serde_json::from_str(&tool(args).await).unwrap()
}

/// Every test of a report served requests, none failed, and its
/// percentiles are in order.
fn assert_served(report: &serde_json::Value) {
    for t in report.as_array().unwrap() {
        assert!(t["ops_per_sec"].as_f64().unwrap() > 0.0, "{t}");
        assert_eq!(t["errors"], 0, "{t}");
        assert!(t["p99_ms"].as_f64().unwrap() >= t["p50_ms"].as_f64().unwrap(), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_for_a_second_and_reports_rates_and_latencies() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = serve(tmp.path()).await;
    let json =
        bench(&["bench", "-c", "4", "-P", "4", "-n", "1000000", "-t", "set,get,mixed", "--duration", "1s"], &creds)
            .await;
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_served(&json);
    for t in json.as_array().unwrap() {
        assert!(t["seconds"].as_f64().unwrap() < 10.0, "--duration bounds the run");
    }
    // Timed to each batch's first reply, as redis-benchmark times it.
    let args = ["bench", "-c", "2", "-P", "8", "-t", "set,get", "--latency", "first", "--duration", "1s"];
    assert_served(&bench(&args, &creds).await);
    // One call at a time per connection (no pipeline), on two client threads.
    assert_served(
        &bench(&["bench", "-c", "3", "-P", "1", "--threads", "2", "-t", "set", "--duration", "1s"], &creds).await,
    );
    // Fill writes each key of the keyspace exactly once, whatever -n says.
    let json = bench(&["bench", "-c", "3", "-P", "8", "-r", "500", "-n", "10", "-t", "fill"], &creds).await;
    assert_eq!(json[0]["test"], "FILL", "{json}");
    assert_eq!(json[0]["requests"], 500, "{json}");
    assert_eq!(json[0]["errors"], 0, "{json}");
    // --ttl: every key written carries it.
    let json = bench(&["bench", "-c", "2", "-P", "4", "-r", "50", "-t", "fill", "--ttl", "1h"], &creds).await;
    assert_eq!(json[0]["errors"], 0, "{json}");
    let config = cryptomem_client::ClientConfig::from_credentials(Credentials::load(&creds).unwrap());
    let client = cryptomem_client::Client::connect(config).await.unwrap();
    for n in [0, 49] {
        match client.ttl(format!("bench:key:{n}")).await.unwrap() {
            cryptomem_client::KeyTtl::ExpiresIn(left) => assert!(left.as_secs() > 3500, "{left:?}"),
            other => panic!("bench:key:{n}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_auth_reports_a_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = serve(tmp.path()).await;
    let args = vec![
        "bench-auth".into(),
        "-c".into(),
        "2".into(),
        "--duration".into(),
        "1s".into(),
        "--credentials".into(),
        creds.display().to_string(),
    ];
    let text = tool(args).await;
    let rate: f64 =
        text.split(": ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|r| r.parse().ok()).unwrap();
    assert!(rate > 0.0, "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_a_cluster_of_three_through_the_sharded_client() {
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = String::from("format = \"cryptomem-cluster\"\nversion = 1\n");
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let creds = serve(&tmp.path().join(name)).await;
        entries += &format!("[[server]]\nname = \"{name}\"\ncredentials = \"{name}/tool-credentials.toml\"\n");
        servers.push(Credentials::load(&creds).unwrap());
    }
    let cluster = tmp.path().join("cluster.toml");
    std::fs::write(&cluster, entries).unwrap();
    for pipeline in ["1", "8"] {
        let args = ["bench", "-c", "3", "-P", pipeline, "-r", "3000", "-t", "fill,get", "--json", "--cluster"];
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        args.push(cluster.display().to_string());
        let json: serde_json::Value = serde_json::from_str(&tool(args).await).unwrap();
        assert_served(&json);
        assert_eq!(json[0]["requests"], 3000, "{json}");
    }
    // The fill reached every server.
    let mut total = 0;
    for creds in servers {
        let client =
            cryptomem_client::Client::connect(cryptomem_client::ClientConfig::from_credentials(creds)).await.unwrap();
        let keys = client.dbsize().await.unwrap();
        assert!(keys > 500, "each server holds about a third: {keys}");
        total += keys;
    }
    assert_eq!(total, 3000);
}

#[tokio::test]
async fn replay_writes_its_trace_as_little_endian_key_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("scan.bin");
    let args =
        ["replay", "--trace", "scan", "--keys", "1000", "-n", "5000", "--scan-len", "100", "--scan-period", "1000"];
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    args.extend(["--write-trace".to_string(), path.display().to_string()]);
    tool(args).await;
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 5000 * 4, "one 4-byte key number per request");
    let keys: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(keys.iter().all(|&k| k < 1000), "key numbers within --keys");
    // The first period ends with a scan of keys 0..100 in order.
    assert_eq!(keys[900..1000], (0..100).collect::<Vec<u32>>()[..]);
}

/// `tools/trace-bounds.py` (run with the `python3` CI installs for the
/// Python client's tests) on a trace small enough to work out by hand: two
/// keys held, requests 1 2 1 2 3 1. Exact LRU hits the second 1 and 2, then
/// 3 pushes 1 out (2 hits). The perfect-count LFU keeps 3 (asked for once)
/// out, since 1 and 2 were asked for twice, and hits the last 1 too (3).
/// Belady evicts 2 (never asked for again) for 3 and hits the last 1 (3).
#[test]
fn trace_bounds_computes_lru_lfu_and_optimum_on_a_hand_worked_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.bin");
    let trace: Vec<u8> = [1u32, 2, 1, 2, 3, 1].iter().flat_map(|k| k.to_le_bytes()).collect();
    std::fs::write(&path, trace).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/trace-bounds.py");
    let out = std::process::Command::new("python3").arg(script).arg(&path).arg("2").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.trim(), "2 keys: lru 0.3333  lfu-admit 0.5000  opt 0.5000");
}
