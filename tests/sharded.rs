//! The sharded client over three (and four) real servers on 127.0.0.1:
//! placement, moves when a server is added, split multi-key calls, and
//! what a down server's keys do.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestServer, eventually_async};
use cryptomem_client::value_crypto::ValueKey;
use cryptomem_client::{
    Backoff, ClientConfig, Error, Failover, HiddenNames, PipelineReply, ShardedClient, ShardedConfig,
};
use cryptomem_server::persist::FsyncPolicy;

const NAMES: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

async fn servers(n: usize) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(TestServer::start_with(|c| c.persist.fsync = FsyncPolicy::Always).await);
    }
    servers
}

/// A short backoff, so a server that comes back is used again soon.
fn quick(config: ClientConfig) -> ClientConfig {
    let mut config = config.with_connections(2);
    config.reconnect_backoff = Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) };
    config
}

fn cluster(servers: &[TestServer], weights: &[f64]) -> ShardedConfig {
    servers
        .iter()
        .zip(NAMES)
        .zip(weights)
        .fold(ShardedConfig::new(), |c, ((s, name), w)| c.named_server(name, *w, quick(s.config())))
        .with_keyring(TestServer::keyring())
}

async fn write_keys(client: &ShardedClient, prefix: &str, count: usize) {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    for chunk in keys.chunks(2000) {
        let pairs: Vec<(&str, &str)> = chunk.iter().map(|k| (k.as_str(), k.as_str())).collect();
        client.mset(&pairs, None).await.unwrap();
    }
}

async fn key_counts(servers: &[TestServer]) -> Vec<u64> {
    let mut counts = Vec::new();
    for s in servers {
        counts.push(s.client().await.dbsize().await.unwrap());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_evenly_and_by_weight_over_three_servers() {
    let servers = servers(3).await;
    let even = ShardedClient::connect(cluster(&servers, &[1.0, 1.0, 1.0])).await.unwrap();
    write_keys(&even, "even:", 100_000).await;
    let counts = key_counts(&servers).await;
    eprintln!("100,000 keys over 3 servers of weight 1: {counts:?}");
    for c in &counts {
        assert!((31_667..=35_000).contains(c), "{counts:?}: not within 5% of 33,333 each");
    }
    assert_eq!(even.dbsize().await.unwrap(), 100_000, "DBSIZE sums the servers");

    // Other names, other weights: 1:2:1 of the next 100,000 keys.
    let weighted = ShardedClient::connect(
        servers
            .iter()
            .zip(["w1", "w2", "w3"])
            .zip([1.0, 2.0, 1.0])
            .fold(ShardedConfig::new(), |c, ((s, n), w)| c.named_server(n, w, s.config()))
            .with_keyring(TestServer::keyring()),
    )
    .await
    .unwrap();
    write_keys(&weighted, "weighted:", 100_000).await;
    let after = key_counts(&servers).await;
    eprintln!(
        "100,000 keys over weights 1:2:1: {:?}",
        after.iter().zip(&counts).map(|(a, b)| a - b).collect::<Vec<_>>()
    );
    for ((a, b), want) in after.iter().zip(&counts).zip([25_000.0, 50_000.0, 25_000.0]) {
        #[allow(clippy::cast_precision_loss)]
        let got = (a - b) as f64;
        assert!((got - want).abs() / want < 0.05, "{after:?} - {counts:?} is not within 5% of 1:2:1");
    }
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_server_takes_a_quarter_of_the_keys_and_no_other_key_moves() {
    let mut servers = servers(4).await;
    let fourth = servers.pop().unwrap();
    let three = ShardedClient::connect(cluster(&servers, &[1.0; 3])).await.unwrap();
    write_keys(&three, "k", 100_000).await;
    let owners: Vec<String> = (0..100_000).map(|i| three.server_for(format!("k{i}")).to_string()).collect();
    servers.push(fourth);
    let four = ShardedClient::connect(cluster(&servers, &[1.0; 4])).await.unwrap();

    let keys: Vec<String> = (0..100_000).map(|i| format!("k{i}")).collect();
    let mut moved = 0;
    for (chunk_start, chunk) in keys.chunks(5000).enumerate().map(|(i, c)| (i * 5000, c)) {
        let values = four.mget(chunk).await.unwrap();
        for (i, (key, value)) in chunk.iter().zip(values).enumerate() {
            let (before, now) = (&owners[chunk_start + i], four.server_for(key));
            if before == now {
                assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key} stayed on {now} and kept its value");
            } else {
                assert_eq!(now, "delta", "{key} moved from {before} to {now}, between two servers that both stayed");
                assert_eq!(value, None, "{key} now lives on the new, empty server");
                moved += 1;
            }
        }
    }
    eprintln!("adding a fourth server moved {moved} of 100,000 keys");
    assert!((22_000..=28_000).contains(&moved), "{moved} of 100,000 keys moved, expected 25% +/- 3%");
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test]
async fn multi_key_calls_pipelines_and_scans_span_the_servers_in_order() {
    let servers = servers(3).await;
    let client = ShardedClient::connect(cluster(&servers, &[1.0; 3])).await.unwrap();
    let pairs: Vec<(String, Vec<u8>)> = (0..60).map(|i| (format!("m{i}"), format!("value {i}").into_bytes())).collect();
    client.mset(&pairs, None).await.unwrap();
    let per_server: HashMap<&str, usize> = pairs.iter().fold(HashMap::new(), |mut m, (k, _)| {
        *m.entry(client.server_for(k)).or_default() += 1;
        m
    });
    assert_eq!(per_server.len(), 3, "the keys span every server: {per_server:?}");

    // Asked in an order unrelated to placement, with missing keys between.
    let asked: Vec<String> = (0..80).rev().map(|i| format!("m{i}")).collect();
    let values = client.mget(&asked).await.unwrap();
    for (key, value) in asked.iter().zip(&values) {
        let i: usize = key[1..].parse().unwrap();
        let expected = (i < 60).then(|| format!("value {i}").into_bytes());
        assert_eq!(value, &expected, "{key}");
    }
    let raw = client.mget_raw(&asked).await.unwrap();
    assert!(raw.iter().zip(&values).all(|(r, v)| r.is_some() == v.is_some()));

    let mut p = client.pipeline();
    for i in (0..10).rev() {
        p.get(format!("m{i}")).unwrap().set(format!("p{i}"), b"x").unwrap().exists(format!("nope{i}")).unwrap();
    }
    assert_eq!(p.len(), 30);
    let mut again = client.pipeline();
    again.get("m1").unwrap().get("m2").unwrap().get("m3").unwrap();
    let before = std::time::Instant::now();
    let (timed, first_at) = again.execute_timed().await;
    let first_at = first_at.expect("a pipeline that was answered has a first reply");
    assert!(before <= first_at && first_at <= std::time::Instant::now());
    assert_eq!(timed.len(), 3);
    assert!(timed.iter().all(|r| matches!(r, Ok(PipelineReply::Value(Some(_))))));
    assert_eq!(client.pipeline().execute_timed().await.1, None);
    let replies = p.execute().await;
    for (n, i) in (0..10).rev().enumerate() {
        assert_eq!(replies[3 * n].as_ref().unwrap(), &PipelineReply::Value(Some(format!("value {i}").into_bytes())));
        assert_eq!(replies[3 * n + 1].as_ref().unwrap(), &PipelineReply::Written(true));
        assert_eq!(replies[3 * n + 2].as_ref().unwrap(), &PipelineReply::Found(false));
    }

    let mut listed: Vec<String> = client
        .scan("m")
        .page_size(7)
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every key of every server, once");
    assert_eq!(client.dbsize().await.unwrap(), 70);
    let info = client.info().await;
    assert_eq!(info.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), &NAMES[..3]);
    assert!(info.iter().all(|(_, text)| text.as_ref().unwrap().contains("used_memory")));

    // Single-key calls go to the same place the multi-key ones did.
    for (key, value) in pairs.iter().take(10) {
        assert_eq!(client.get(key).await.unwrap().as_ref(), Some(value));
        assert!(client.exists(key).await.unwrap());
        assert!(client.expire(key, Duration::from_secs(60)).await.unwrap());
        assert_eq!(client.persist(key).await.unwrap(), Some(true));
        let (version, _) = client.get_versioned(key).await.unwrap().unwrap();
        client.set_if_version(key, b"v2", version, cryptomem_client::SetOptions::default()).await.unwrap();
        assert_eq!(client.update(key, |v| v.map(|v| [v, b"!"].concat())).await.unwrap().unwrap(), b"v2!");
        assert!(client.delete(key).await.unwrap());
    }
    for s in servers {
        s.stop().await;
    }
}

/// Writes `count` keys and returns them with the server each went to.
async fn placed(client: &ShardedClient, count: usize) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for i in 0..count {
        let key = format!("key{i}");
        client.set(&key, key.as_bytes()).await.unwrap();
        keys.push((key.clone(), client.server_for(&key).to_string()));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_server_fails_only_its_keys_and_serves_them_again_when_back() {
    let mut servers = servers(3).await;
    let client = ShardedClient::connect(cluster(&servers, &[1.0; 3])).await.unwrap();
    let keys = placed(&client, 300).await;

    let down = servers.remove(1);
    let (dir, token, addr) = (down.tempdir(), down.token.clone(), down.addr);
    down.crash().await;
    for (key, owner) in &keys {
        match client.get(key).await {
            Err(Error::Unavailable { server, .. }) => assert_eq!((owner.as_str(), server.as_str()), ("bravo", "bravo")),
            Ok(value) => {
                assert_ne!(owner, "bravo", "{key} was served while its server was down");
                assert_eq!(value.as_deref(), Some(key.as_bytes()));
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
    let bravo: Vec<&str> = keys.iter().filter(|(_, o)| o == "bravo").map(|(k, _)| k.as_str()).collect();
    let err = client.mget(&["key0", "key1", "key2", bravo[0]]).await.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { server, .. } if server == "bravo"), "{err}");
    assert!(err.to_string().contains("bravo"), "the message names the server: {err}");
    assert!(client.dbsize().await.is_err(), "a sum over a missing server is not given");
    let info = client.info().await;
    let down: Vec<&str> = info.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.as_str()).collect();
    assert_eq!(down, ["bravo"], "INFO reports each server, the down one as an error");

    // A pipeline over every server: the down server's commands fail, the others' stand.
    let mut p = client.pipeline();
    for (key, _) in &keys[..30] {
        p.get(key).unwrap();
    }
    for ((key, owner), reply) in keys[..30].iter().zip(p.execute().await) {
        match reply {
            Err(Error::Unavailable { server, .. }) => assert_eq!((owner.as_str(), server.as_str()), ("bravo", "bravo")),
            Ok(PipelineReply::Value(Some(v))) => assert!(owner != "bravo" && v == key.as_bytes(), "{key}"),
            other => panic!("{key} on {owner}: {other:?}"),
        }
    }
    let set_elsewhere = keys.iter().find(|(_, o)| o != "bravo").unwrap();
    client.set(&set_elsewhere.0, b"changed").await.unwrap();

    // Back on its address, with what it had stored.
    let back = TestServer::start_in(dir, Some(token), |c| c.listen = addr).await;
    assert!(
        eventually_async(|| async { client.get(bravo[0]).await.is_ok() }).await,
        "the client reconnects within its backoff"
    );
    for key in &bravo {
        assert_eq!(client.get(key).await.unwrap().as_deref(), Some(key.as_bytes()), "{key} kept its data");
    }
    servers.insert(1, back);
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_only_mode_moves_a_down_servers_keys_to_the_next_in_line() {
    let mut servers = servers(3).await;
    // A long first wait, so the down server stays skipped for the whole test.
    let config = cluster(&servers, &[1.0; 3]).with_failover(Failover::CacheOnly).map_servers(|mut c| {
        c.reconnect_backoff = Backoff { initial: Duration::from_secs(20), max: Duration::from_secs(20) };
        c
    });
    let client = ShardedClient::connect(config).await.unwrap();
    let keys = placed(&client, 120).await;
    let bravo: Vec<&str> = keys.iter().filter(|(_, o)| o == "bravo").map(|(k, _)| k.as_str()).collect();

    let down = servers.remove(1);
    down.crash().await;
    for key in &bravo {
        assert_eq!(client.get(key).await.unwrap(), None, "{key}: a miss on the stand-in, not an error");
        client.set(key, b"rebuilt").await.unwrap();
        assert_ne!(client.server_for(key), "bravo");
        assert_eq!(client.get(key).await.unwrap().as_deref(), Some(&b"rebuilt"[..]));
    }
    let values = client.mget(&bravo).await.unwrap();
    assert!(values.iter().all(|v| v.as_deref() == Some(&b"rebuilt"[..])), "MGET goes to the stand-ins too");
    for (key, owner) in keys.iter().filter(|(_, o)| o != "bravo") {
        assert_eq!(client.server_for(key), owner, "other keys stay where they were");
    }
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test]
async fn hidden_names_place_keys_by_the_name_the_server_sees() {
    let servers = servers(3).await;
    let names = HiddenNames::new(&ValueKey::from_bytes([9; 32]), b':');
    let client = ShardedClient::connect(cluster(&servers, &[1.0; 3]).with_hidden_names(names.clone())).await.unwrap();
    let plain = ShardedClient::new(cluster(&servers, &[1.0; 3])).unwrap();
    let addresses: Vec<String> = plain.servers().map(|(_, c)| c.server().to_string()).collect();
    assert_eq!(addresses, servers.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>());
    for i in 0..50 {
        let key = format!("user:{i}");
        client.set(&key, b"secret").await.unwrap();
        let wire = names.wire_name(key.as_bytes());
        assert_eq!(client.server_for(&key), plain.server_for(&wire), "placed by the hidden name");
        let owner = NAMES.iter().position(|n| *n == client.server_for(&key)).unwrap();
        let direct = servers[owner].client().await;
        assert!(direct.get_raw(&wire).await.unwrap().is_some(), "stored under the hidden name on its server");
    }
    let listed = client.scan("user:").collect().await.unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|k| k.starts_with(b"user:") && k.len() == "user:".len() + 32), "names are hidden");
    for s in servers {
        s.stop().await;
    }
}
