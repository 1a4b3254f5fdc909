//! Versions and compare-and-set: no lost update under contention, conflicts
//! reported, versions kept across snapshots and restarts.

mod common;

use common::TestServer;
use cryptomem_client::{Error, SetOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tasks_updating_one_counter_lose_no_update() {
    let server = TestServer::start().await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                client
                    .update("counter", |old| {
                        let n = old.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                        Some((n + 1).to_be_bytes().to_vec())
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    eprintln!("10 x 1,000 contended updates in {took:?}: {:.0} updates/s", 10_000.0 / took.as_secs_f64());
    let c = server.client().await;
    let (_, value) = c.get_versioned("counter").await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(value.try_into().unwrap()), 10_000);
    // update can also delete, and does nothing to a missing key asked to go.
    assert_eq!(c.update("counter", |_| None).await.unwrap(), None);
    assert!(!c.exists("counter").await.unwrap());
    assert_eq!(c.update("counter", |_| None).await.unwrap(), None);
}

#[tokio::test]
async fn conflicts_are_reported_and_change_nothing() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let none = SetOptions::default();
    let v1 = c.set_if_version("k", b"a", 0, none).await.unwrap();
    assert!(v1 > 0);
    let again = c.set_if_version("k", b"b", 0, none).await.unwrap_err();
    assert!(matches!(again, Error::Conflict(_)), "0 means absent: {again}");
    let v2 = c.set_if_version("k", b"b", v1, none).await.unwrap();
    assert!(v2 > v1);
    let stale = c.set_if_version("k", b"c", v1, none).await.unwrap_err();
    assert!(matches!(stale, Error::Conflict(_)), "{stale}");
    assert_eq!(c.get_versioned("k").await.unwrap(), Some((v2, b"b".to_vec())));
    // Every change moves the version, EXPIRE and PERSIST too.
    c.set("k", b"d").await.unwrap();
    let (v3, _) = c.get_versioned("k").await.unwrap().unwrap();
    assert!(v3 > v2);
    assert!(c.expire("k", std::time::Duration::from_secs(60)).await.unwrap());
    let (v4, _) = c.get_versioned("k").await.unwrap().unwrap();
    assert!(v4 > v3);
    assert!(matches!(c.delete_if_version("k", v3).await.unwrap_err(), Error::Conflict(_)));
    assert!(c.exists("k").await.unwrap());
    assert!(c.delete_if_version("k", v4).await.unwrap());
    assert!(!c.delete_if_version("k", 0).await.unwrap(), "absent, as 0 says: nothing to delete");
    assert!(matches!(c.delete_if_version("k", v4).await.unwrap_err(), Error::Conflict(_)));
    assert_eq!(c.get_versioned("missing").await.unwrap(), None);
}

#[tokio::test]
async fn versions_survive_a_snapshot_and_a_restart() {
    let server = TestServer::start().await;
    let c = server.client().await;
    for i in 0..20 {
        c.set(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let before_snapshot = c.get_versioned("k3").await.unwrap().unwrap().0;
    c.save().await.unwrap();
    // After the snapshot, some keys change again (in the log only).
    for i in 0..5 {
        c.set(format!("k{i}"), b"again").await.unwrap();
    }
    let mut versions = Vec::new();
    for i in 0..20 {
        versions.push(c.get_versioned(format!("k{i}")).await.unwrap().unwrap().0);
    }
    assert!(versions[3] > before_snapshot);
    drop(c);
    let server = server.restart(|_| {}).await;
    let c = server.client().await;
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(c.get_versioned(format!("k{i}")).await.unwrap().unwrap().0, *v, "k{i}");
    }
    // The stored version still guards writes after the restart.
    let fresh = c.set_if_version("k7", b"after", versions[7], SetOptions::default()).await.unwrap();
    assert!(fresh > versions.iter().copied().max().unwrap());
}
