//! The short form of the long soak (`tools/memory-soak.sh`): mixed load
//! with TTLs and a snapshot every 2,000 writes for a few seconds, sampling
//! the data dir's size and file count. The data dir must not grow with the
//! run's length, and expired keys must be reclaimed without being read.
//! RSS is left to the script: here the server shares its process with the
//! clients and the test harness.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, info_field};
use cryptomem_client::SetOptions;
use cryptomem_server::store::Clock;

fn dir_stats(dir: &Path) -> (u64, usize) {
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    let bytes = entries.iter().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum();
    (bytes, entries.len())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_stays_bounded_under_ttl_load_with_frequent_snapshots() {
    let server = TestServer::start_with(|c| {
        c.clock = Clock::System;
        c.persist.snapshot_after_writes = 2000;
    })
    .await;
    let run = Duration::from_secs(8);
    let end = Instant::now() + run;
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let client = server.client().await;
        writers.push(tokio::spawn(async move {
            let ttl = SetOptions::ttl(Duration::from_millis(700));
            let mut i = 0u64;
            while Instant::now() < end {
                let key = format!("soak:{}", (i * 4 + w) % 4000);
                match i % 4 {
                    0 => drop(client.get(&key).await.unwrap()),
                    1 => client.set(&key, [7u8; 100]).await.unwrap(),
                    _ => drop(client.set_with(&key, [9u8; 100], ttl).await.unwrap()),
                }
                i += 1;
            }
            i
        }));
    }
    let mut samples = Vec::new();
    while Instant::now() < end {
        samples.push(dir_stats(&server.data_dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut requests = 0;
    for w in writers {
        requests += w.await.unwrap();
    }
    assert!(samples.len() >= 40, "{} samples", samples.len());
    let most_files = samples.iter().map(|s| s.1).max().unwrap();
    assert!(most_files <= 10, "{most_files} files in the data dir at once");
    // The first second fills the keyspace; compare the second and last quarters.
    let quarter = samples.len() / 4;
    let early = median(samples[quarter..2 * quarter].iter().map(|s| s.0).collect());
    let late = median(samples[3 * quarter..].iter().map(|s| s.0).collect());
    eprintln!("{requests} requests; data dir median {early} -> {late} bytes; at most {most_files} files");
    assert!(late <= 2 * early.max(64 << 10), "data dir grew from {early} to {late} bytes over {requests} requests");

    let client = server.client().await;
    let info = client.info().await.unwrap();
    assert!(info_field(&info, "snapshots_taken").parse::<u64>().unwrap() >= 3, "{info}");
    // Only the keys set without a TTL may stay; the rest expire unread.
    let live_after_ttl = async {
        loop {
            if client.dbsize().await.unwrap() <= 1000 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), live_after_ttl).await.expect("active expiry reclaims expired keys");
}
