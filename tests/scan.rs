//! SCAN end to end: a point-in-time listing under concurrent writes, limited
//! to the token's prefixes, with clear errors for cursors that cannot go on.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::TestServer;
use cryptomem_client::{Client, Error};
use cryptomem_server::auth::Role;
use cryptomem_wire::protocol::Request;

fn code(err: &Error) -> &str {
    match err {
        Error::Server { code, .. } => code,
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_at_the_start_exactly_once_while_four_writers_change_the_keyspace() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let at_start: Vec<(String, Vec<u8>)> = (0..20_000).map(|i| (format!("s:{i:05}"), b"v".to_vec())).collect();
    for chunk in at_start.chunks(1000) {
        c.mset(chunk, None).await.unwrap();
    }
    let expected: HashSet<Bytes> = at_start.iter().map(|(k, _)| Bytes::from(k.clone())).collect();

    let mut scan = c.scan("").page_size(100);
    let mut seen: Vec<Bytes> = scan.next_page().await.unwrap().unwrap();
    // The writers start once the view exists.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (client, stop) = (server.client().await, Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(u64::from(w));
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let old = format!("s:{:05}", rng.u32(..20_000));
                match n % 3 {
                    0 => drop(client.delete(&old).await.unwrap()),
                    1 => client.set(&old, b"again").await.unwrap(),
                    _ => client.set(format!("new:{w}:{n}"), b"x").await.unwrap(),
                }
                n += 1;
            }
            n
        }));
    }
    let mut pages = 1;
    while let Some(page) = scan.next_page().await.unwrap() {
        seen.extend(page);
        pages += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers {
        writes += w.await.unwrap();
    }
    assert!(writes > 200, "the writers ran during the scan: {writes} writes");
    assert!(pages >= 200, "{pages} pages");
    let unique: HashSet<Bytes> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice");
    assert_eq!(unique, expected, "exactly the keys at the start: none added since, none deleted since missing");
}

#[tokio::test]
async fn a_prefix_token_only_ever_sees_its_keys() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    for k in ["a:1", "a:2", "ab", "b:1", "b:2"] {
        admin.set(k, b"v").await.unwrap();
    }
    let token = admin.token_add(Role::Read, vec!["a:".into()], "a only").await.unwrap();
    let mut config = server.config();
    config.token = token;
    let limited = Client::connect(config).await.unwrap();
    let mut all = limited.scan("").page_size(1).collect().await.unwrap();
    all.sort();
    assert_eq!(all, [Bytes::from_static(b"a:1"), Bytes::from_static(b"a:2")]);
    assert!(limited.scan("b:").collect().await.unwrap().is_empty());
    assert!(limited.scan("a").collect().await.unwrap().len() == 2, "ab is outside `a:`");
    let mut everything = admin.scan("").collect().await.unwrap();
    everything.sort();
    assert_eq!(everything.len(), 5);
}

#[tokio::test]
async fn cursors_that_cannot_go_on_get_nocursor_and_bad_counts_err() {
    let server = TestServer::start().await;
    let c = server.client().await;
    for i in 0..50 {
        c.set(format!("k{i}"), b"v").await.unwrap();
    }
    let scan = |cursor, count| Request::Scan { cursor, count, prefix: Bytes::new() };
    let unknown = c.request(&scan(12345, 10)).await.unwrap_err();
    assert_eq!(code(&unknown), "NOCURSOR", "{unknown}");
    let (cursor, keys) = c.request(&scan(0, 10)).await.unwrap().parse_scan().unwrap();
    assert_eq!(keys.len(), 10);
    assert_ne!(cursor, 0);
    let (next, _) = c.request(&scan(cursor, 10)).await.unwrap().parse_scan().unwrap();
    let reused = c.request(&scan(cursor, 10)).await.unwrap_err();
    assert_eq!(code(&reused), "NOCURSOR", "a used cursor does not repeat its page: {reused}");
    assert_ne!(next, 0);
    let zero = c.request(&scan(0, 0)).await.unwrap_err();
    assert_eq!(code(&zero), "ERR", "{zero}");
    let info = c.info().await.unwrap();
    assert_eq!(common::info_field(&info, "scan_cursors_open"), "1", "{info}");
    c.ping().await.unwrap();
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// What an open cursor holds while every key is rewritten: the worst case.
/// A measurement, not a check: `cargo test --release --test scan --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: about 30 s in release"]
async fn memory_held_by_an_open_scan_while_the_keyspace_is_rewritten() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let keys = 1_000_000u32;
    let fill = |tag: &'static str| {
        let c = c.clone();
        async move {
            for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
                let pairs: Vec<(String, &[u8])> = chunk.iter().map(|i| (format!("m:{i:07}"), tag.as_bytes())).collect();
                c.mset(&pairs, None).await.unwrap();
            }
        }
    };
    fill("first value, about a hundred bytes once sealed ........................").await;
    let started = std::time::Instant::now();
    let all = c.scan("").page_size(10_000).collect().await.unwrap();
    eprintln!("SCAN of {} keys: {:?}", all.len(), started.elapsed());
    let base = rss_mib();
    let mut scan = c.scan("").page_size(10);
    let _ = scan.next_page().await.unwrap();
    fill("second value, about a hundred bytes once sealed .......................").await;
    let held = rss_mib();
    let rest = scan.collect().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    fill("third value, about a hundred bytes once sealed ........................").await;
    let after = rss_mib();
    eprintln!(
        "RSS {base:.0} MiB before; {held:.0} MiB with a cursor open while all {keys} keys were rewritten; \
         {after:.0} MiB after it finished ({} keys) and the keys were rewritten again",
        rest.len() + 10
    );
}
