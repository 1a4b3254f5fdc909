//! The memory limit as a user meets it: OOM under noeviction, evictions
//! that survive a restart, a data dir larger than the limit, CONFIG SET;
//! and active defrag after a fill.

mod common;

use common::{TestServer, info_field};
use cryptomem_client::{Client, Error};
use cryptomem_server::store::{Clock, EvictionPolicy};

async fn used_and_limit(client: &Client) -> (u64, u64) {
    let info = client.info().await.unwrap();
    (info_field(&info, "used_memory").parse().unwrap(), info_field(&info, "maxmemory").parse().unwrap())
}

async fn fill(client: &Client, n: usize) {
    for i in 0..n {
        client.set(&format!("key{i}"), &[7u8; 100]).await.unwrap();
    }
}

/// A server (system clock, no limit) holding `n` keys of 100 bytes, a
/// client, and the memory used.
async fn filled_server(n: usize) -> (TestServer, Client, u64) {
    let server = TestServer::start_with(|c| c.clock = Clock::System).await;
    let client = server.client().await;
    fill(&client, n).await;
    let (used, _) = used_and_limit(&client).await;
    (server, client, used)
}

/// Writes `keys` with 100-byte values, a pipeline of 1000 at a time.
async fn fill_pipelined(client: &Client, keys: &[String]) {
    for chunk in keys.chunks(1000) {
        let mut p = client.pipeline();
        for key in chunk {
            p.set(key, [7u8; 100]).unwrap();
        }
        p.execute().await.unwrap().into_iter().for_each(|r| drop(r.unwrap()));
    }
}

fn defrag_passes(info: &str) -> u64 {
    info_field(info, "active_defrag_passes").parse().unwrap()
}

/// Enough keys for the key count to move past the defrag trigger's floor.
fn defrag_keys() -> Vec<String> {
    (0..60_000).map(|i| format!("key{i}")).collect()
}

/// Active defrag runs on its own once a fill has settled, once, and every
/// key reads back afterwards. (Test binaries use the system allocator,
/// whose pages mix map nodes with items, so the pass finds sparse pages.)
#[tokio::test]
async fn active_defrag_runs_once_a_fill_settles_and_keeps_every_key() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let keys = defrag_keys();
    fill_pipelined(&client, &keys).await;
    let mut info = client.info().await.unwrap();
    for _ in 0..100 {
        if defrag_passes(&info) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        info = client.info().await.unwrap();
    }
    assert_eq!(defrag_passes(&info), 1, "{info}");
    assert!(info_field(&info, "active_defrag_hits").parse::<u64>().unwrap() > 0, "{info}");
    for chunk in keys.chunks(1000) {
        let values = client.mget(chunk).await.unwrap();
        assert!(values.iter().all(|v| v.as_deref() == Some(&[7u8; 100][..])));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(defrag_passes(&client.info().await.unwrap()), 1, "nothing moved since, no second pass");
    server.stop().await;
}

/// `--active-defrag false`: the same fill, and no pass in the time the one
/// above takes to run.
#[tokio::test]
async fn with_active_defrag_off_no_pass_runs() {
    let server = TestServer::start_with(|c| c.active_defrag = false).await;
    let client = server.client().await;
    fill_pipelined(&client, &defrag_keys()).await;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let info = client.info().await.unwrap();
    assert_eq!(defrag_passes(&info), 0, "{info}");
    assert_eq!(info_field(&info, "active_defrag_hits"), "0");
    server.stop().await;
}

async fn present(client: &Client, n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..n {
        if client.exists(&format!("key{i}")).await.unwrap() {
            out.push(i);
        }
    }
    out
}

#[tokio::test]
async fn noeviction_answers_oom_and_keeps_reads_and_deletes_working() {
    let (server, client, used) = filled_server(50).await;
    client.config_set("maxmemory", &used.to_string()).await.unwrap();
    assert_eq!(client.config_get("maxmemory-policy").await.unwrap(), "noeviction");
    let err = client.set("one-more", &[1u8; 100]).await.unwrap_err();
    assert!(matches!(&err, Error::Server { code, .. } if code == "OOM"), "{err}");
    assert_eq!(present(&client, 50).await.len(), 50, "nothing stored was lost");
    assert_eq!(client.get("key3").await.unwrap(), Some(vec![7u8; 100]));
    assert!(client.delete("key3").await.unwrap());
    client.set("one-more", &[1u8; 100]).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn evicted_keys_stay_gone_after_a_restart() {
    let (server, client, used) = filled_server(100).await;
    client.config_set("maxmemory-policy", "allkeys-lru").await.unwrap();
    client.config_set("maxmemory", &(used / 2).to_string()).await.unwrap();
    let kept = present(&client, 100).await;
    assert!(kept.len() < 60, "the lower limit evicted at once: {} left", kept.len());
    let info = client.info().await.unwrap();
    assert_eq!(info_field(&info, "evicted_keys").parse::<usize>().unwrap(), 100 - kept.len());
    let (used, limit) = used_and_limit(&client).await;
    assert!(used <= limit, "{used} > {limit}");
    let info = client.info().await.unwrap();
    assert!(info_field(&info, "used_memory_peak").parse::<u64>().unwrap() >= used);
    drop(client);
    let server = server.restart(|c| c.clock = Clock::System).await;
    let client = server.client().await;
    assert_eq!(present(&client, 100).await, kept, "a restart brings no evicted key back");
    server.stop().await;
}

#[tokio::test]
async fn a_data_dir_larger_than_the_limit_recovers_within_it() {
    let (server, client, used) = filled_server(200).await;
    drop(client);
    let server = server
        .restart(|c| {
            c.clock = Clock::System;
            c.memory.bytes = used / 4;
            c.memory.policy = EvictionPolicy::AllKeysRandom;
        })
        .await;
    let client = server.client().await;
    let (now_used, limit) = used_and_limit(&client).await;
    assert_eq!(limit, used / 4);
    assert!(now_used <= limit, "{now_used} > {limit}");
    let left = present(&client, 200).await.len();
    assert!((20..=60).contains(&left), "{left} of 200 keys fit a quarter of the memory");
    server.stop().await;
}

#[tokio::test]
async fn under_write_load_used_memory_stays_at_or_under_the_limit() {
    let server = TestServer::start_with(|c| {
        c.clock = Clock::System;
        c.memory.bytes = 64 * 1024;
        c.memory.policy = EvictionPolicy::AllKeysTinyLfu;
    })
    .await;
    let client = server.client().await;
    for round in 0..4 {
        let mut pipe = client.pipeline();
        for i in 0..500 {
            pipe.set(format!("k{round}-{i}"), [3u8; 200]).unwrap();
        }
        pipe.execute().await.unwrap();
        let (used, limit) = used_and_limit(&client).await;
        assert!(used <= limit, "round {round}: {used} > {limit}");
    }
    let info = client.info().await.unwrap();
    assert!(info_field(&info, "evicted_keys").parse::<u64>().unwrap() > 1000);
    assert_eq!(info_field(&info, "maxmemory_policy"), "allkeys-tinylfu");
    // Writes alone give the small simulations no reads to compare.
    assert_eq!(info_field(&info, "tinylfu_ranking"), "counts");
    client.config_set("maxmemory-policy", "allkeys-lru").await.unwrap();
    let info = client.info().await.unwrap();
    assert!(!info.contains("tinylfu_ranking"), "only under allkeys-tinylfu: {info}");
    server.stop().await;
}

#[tokio::test]
async fn config_needs_an_admin_and_rejects_bad_values() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let err = client.config_set("maxmemory-policy", "lru").await.unwrap_err();
    assert!(
        matches!(&err, Error::Server { code, message } if code == "ERR" && message.contains("allkeys-lru")),
        "{err}"
    );
    let err = client.config_get("requirepass").await.unwrap_err();
    assert!(matches!(&err, Error::Server { code, .. } if code == "ERR"), "{err}");
    let token = client.token_add(cryptomem_wire::Role::Write, vec![], "writer").await.unwrap();
    let mut config = server.config();
    config.token = token;
    let writer = Client::connect(config).await.unwrap();
    let err = writer.config_get("maxmemory").await.unwrap_err();
    assert!(matches!(&err, Error::Server { code, .. } if code == "NOPERM"), "{err}");
    server.stop().await;
}
