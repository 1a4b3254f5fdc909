//! One `Client` shared by many tasks: every result is checked against a model.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestServer;
use cryptomem_client::SetOptions;

const TASKS: usize = 32;
const OPS: usize = 1000;
const KEYS_PER_TASK: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_share_one_client() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut model: HashMap<String, Vec<u8>> = HashMap::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for i in 0..OPS {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = format!("t{t}-k{}", rng as usize % KEYS_PER_TASK);
                    let value = format!("t{t}-op{i}").into_bytes();
                    match (rng >> 32) % 7 {
                        0 | 1 => {
                            c.set(&key, &value).await.unwrap();
                            model.insert(key, value);
                        }
                        2 | 3 => assert_eq!(
                            c.get(&key).await.unwrap(),
                            model.get(&key).cloned(),
                            "task {t} op {i} GET {key}"
                        ),
                        4 => assert_eq!(
                            c.delete(&key).await.unwrap(),
                            model.remove(&key).is_some(),
                            "task {t} op {i} DEL {key}"
                        ),
                        5 => {
                            let wrote = c.set_with(&key, &value, SetOptions::default().only_if_absent()).await.unwrap();
                            assert_eq!(wrote, !model.contains_key(&key), "task {t} op {i} SETNX {key}");
                            model.entry(key).or_insert(value);
                        }
                        _ => {
                            let other = format!("t{t}-k{}", (rng >> 40) as usize % KEYS_PER_TASK);
                            let got = c.mget(&[&key, &other]).await.unwrap();
                            assert_eq!(
                                got,
                                vec![model.get(&key).cloned(), model.get(&other).cloned()],
                                "task {t} op {i} MGET"
                            );
                        }
                    }
                }
                model
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        let model = tokio::time::timeout(Duration::from_secs(120), task).await.expect("bounded run").unwrap();
        for (k, v) in &model {
            assert_eq!(client.get(k).await.unwrap().as_ref(), Some(v));
        }
        total += model.len();
    }
    assert_eq!(client.dbsize().await.unwrap(), total as u64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once() {
    let server = TestServer::start().await;
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let config = server.config();
            tokio::spawn(async move {
                let c = cryptomem_client::Client::connect(config).await.unwrap();
                for i in 0..50 {
                    let key = format!("c{t}-{i}");
                    c.set(&key, key.as_bytes()).await.unwrap();
                    assert_eq!(c.get(&key).await.unwrap().unwrap(), key.as_bytes());
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("bounded run").unwrap();
    }
    assert_eq!(server.store.len(), 1000);
}
