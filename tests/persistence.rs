//! State survives restarts; a failing log stops writes but not reads.

mod common;

use std::time::Duration;

use common::{TestServer, eventually};
use cryptomem::client::Error;
use cryptomem::persist::FsyncPolicy;
use cryptomem::persist::log::segment_name;
use cryptomem::store::Clock;
use cryptomem::{KeyTtl, SetOptions};

use common::info_field as info_value;

#[tokio::test]
async fn every_kind_of_write_survives_a_restart() {
    // The wall clock, so the short TTL really passes while the server is down.
    let server = TestServer::start_with(|cfg| cfg.clock = Clock::System).await;
    let c = server.client().await;
    c.set("plain", b"v1").await.unwrap();
    c.set("overwritten", b"old").await.unwrap();
    c.set("overwritten", b"new").await.unwrap();
    c.set("deleted", b"x").await.unwrap();
    c.delete("deleted").await.unwrap();
    c.set_with("ttl", b"t", SetOptions::ttl(Duration::from_secs(3600))).await.unwrap();
    c.set_with("persisted", b"p", SetOptions::ttl(Duration::from_secs(3600))).await.unwrap();
    c.persist("persisted").await.unwrap();
    c.set("expire-later", b"e").await.unwrap();
    c.expire("expire-later", Duration::from_secs(7200)).await.unwrap();
    c.mset(&[("m1", "1"), ("m2", "2")], None).await.unwrap();
    c.set_with("gone-soon", b"g", SetOptions::ttl(Duration::from_millis(50))).await.unwrap();
    let sealed_before = c.get_raw("plain").await.unwrap().unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Restart (the graceful stop writes a snapshot) ...
    let server = server.restart(|cfg| cfg.clock = Clock::System).await;
    let check = |server: &TestServer, keys: u64| {
        let config = server.config();
        async move {
            let c = cryptomem::Client::connect(config).await.unwrap();
            assert_eq!(c.get("plain").await.unwrap().unwrap(), b"v1");
            assert_eq!(c.get("overwritten").await.unwrap().unwrap(), b"new");
            assert_eq!(c.get("deleted").await.unwrap(), None);
            assert!(matches!(c.ttl("ttl").await.unwrap(), KeyTtl::ExpiresIn(d) if d > Duration::from_secs(3500)));
            assert_eq!(c.ttl("persisted").await.unwrap(), KeyTtl::Persistent);
            assert!(
                matches!(c.ttl("expire-later").await.unwrap(), KeyTtl::ExpiresIn(d) if d > Duration::from_secs(7000))
            );
            assert_eq!(c.mget(&["m1", "m2"]).await.unwrap(), vec![Some(b"1".to_vec()), Some(b"2".to_vec())]);
            assert_eq!(c.get("gone-soon").await.unwrap(), None, "expired while down: dropped at recovery");
            assert_eq!(c.dbsize().await.unwrap(), keys);
            c
        }
    };
    let c = check(&server, 7).await;
    assert_eq!(c.get_raw("plain").await.unwrap().unwrap(), sealed_before, "the server stores the exact ciphertext");
    // ... and again, from that snapshot plus more log.
    c.set("after-save", b"a").await.unwrap();
    drop(c);
    let server = server.restart(|cfg| cfg.clock = Clock::System).await;
    let c = check(&server, 8).await;
    assert_eq!(c.get("after-save").await.unwrap().unwrap(), b"a");
    server.stop().await;
}

#[tokio::test]
async fn save_writes_a_snapshot_and_removes_the_log_it_covers() {
    let server = TestServer::start().await;
    let c = server.client().await;
    for i in 0..100 {
        c.set(format!("k{i}"), b"v").await.unwrap();
    }
    let cut = c.save().await.unwrap();
    assert_eq!(cut, 100);
    let info = c.info().await.unwrap();
    assert_eq!(info_value(&info, "fsync"), "everysec");
    assert_eq!(info_value(&info, "snapshots_taken"), "1");
    assert_eq!(info_value(&info, "last_snapshot_keys"), "100");
    assert_eq!(info_value(&info, "changes_since_snapshot"), "0");
    assert_eq!(info_value(&info, "writes_enabled"), "1");
    let files: Vec<String> =
        std::fs::read_dir(&server.data_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.contains(&"snapshot-00000000000000000100.cms".to_string()), "{files:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(server.data_dir.join("snapshot-00000000000000000100.cms")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "snapshots hold key names: private");
    }
    assert!(!files.contains(&segment_name(1)), "the segment the snapshot covers is gone: {files:?}");
    assert!(files.contains(&segment_name(101)), "{files:?}");
}

#[tokio::test]
async fn snapshots_are_taken_after_n_writes_in_the_background() {
    let server = TestServer::start_with(|c| c.persist.snapshot_after_writes = 50).await;
    let c = server.client().await;
    for i in 0..120 {
        c.set(format!("k{i}"), b"v").await.unwrap();
    }
    let mut taken = 0;
    for _ in 0..100 {
        taken = info_value(&c.info().await.unwrap(), "snapshots_taken").parse().unwrap();
        if taken >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taken >= 1);
}

#[tokio::test]
async fn snapshots_are_taken_when_the_log_outgrows_the_last_snapshot() {
    let server = TestServer::start_with(|c| {
        c.persist.snapshot_log_min_bytes = 8 << 10;
        c.persist.snapshot_log_percentage = 100;
    })
    .await;
    let c = server.client().await;
    let snapshots = |info: &str| -> u64 { info_value(info, "snapshots_taken").parse().unwrap() };
    // 20 writes of ~150 log bytes each: below the 8 KiB minimum.
    for i in 0..20 {
        c.set(format!("k{i}"), [7u8; 100]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let info = c.info().await.unwrap();
    assert_eq!(snapshots(&info), 0, "{info}");
    assert!(info_value(&info, "log_bytes_since_snapshot").parse::<u64>().unwrap() > 2000, "{info}");
    // Past the minimum: one snapshot, after which the log counts from zero.
    for i in 0..60 {
        c.set(format!("k{i}"), [7u8; 100]).await.unwrap();
    }
    let mut info = String::new();
    for _ in 0..50 {
        info = c.info().await.unwrap();
        if snapshots(&info) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snapshots(&info), 1, "{info}");
    let snapshot_bytes: u64 = info_value(&info, "last_snapshot_bytes").parse().unwrap();
    assert!(snapshot_bytes > 60 * 100, "{info}");
    assert!(info_value(&info, "log_bytes_since_snapshot").parse::<u64>().unwrap() < 8 << 10, "{info}");
}

#[tokio::test]
async fn snapshots_are_taken_on_the_interval_when_something_changed() {
    let server = TestServer::start_with(|c| {
        c.persist.snapshot_after_writes = 0;
        c.persist.snapshot_interval = Duration::from_secs(1);
    })
    .await;
    let c = server.client().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(info_value(&c.info().await.unwrap(), "snapshots_taken"), "0", "nothing changed, nothing to snapshot");
    c.set("k", b"v").await.unwrap();
    let mut taken = String::new();
    for _ in 0..50 {
        taken = info_value(&c.info().await.unwrap(), "snapshots_taken");
        if taken == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(taken, "1");
}

#[tokio::test]
async fn with_fsync_always_a_failing_log_refuses_writes_but_serves_reads() {
    let server = TestServer::start_with(|c| c.persist.fsync = FsyncPolicy::Always).await;
    let c = server.client().await;
    c.set("before", b"kept").await.unwrap();
    // The next segment (starting after the cut SAVE takes) will be on a full disk.
    std::os::unix::fs::symlink("/dev/full", server.data_dir.join(segment_name(2))).unwrap();
    c.save().await.unwrap();
    assert!(
        eventually(
            || server.store.len() == 1 && std::fs::symlink_metadata(server.data_dir.join(segment_name(2))).is_ok()
        )
        .await
    );
    let mut failed = false;
    for _ in 0..100 {
        if info_value(&c.info().await.unwrap(), "writes_enabled") == "0" {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "INFO reports writes disabled");
    let err = c.set("after", b"x").await.unwrap_err();
    assert!(matches!(&err, Error::Server { code, .. } if code == "IOERR"), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(c.get("before").await.unwrap().unwrap(), b"kept", "reads keep working");
    assert!(info_value(&c.info().await.unwrap(), "last_error").contains("No space left"));
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_dir() {
    let server = TestServer::start().await;
    let err = cryptomem::persist::DataDir::open_or_init(&server.data_dir, cryptomem::auth::HashParams::default())
        .unwrap_err();
    assert!(err.to_string().contains("in use by another cryptomem process"), "{err}");
}
