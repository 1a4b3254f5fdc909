//! State survives restarts; a failing log stops writes but not reads.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use common::{RawConn, TestServer, assert_error, eventually};
use cryptomem_client::Error;
use cryptomem_client::{Client, KeyTtl, SetOptions};
use cryptomem_server::persist::FsyncPolicy;
use cryptomem_server::persist::disk::faults::FaultyDisk;
use cryptomem_server::persist::segment_name;
use cryptomem_server::store::Clock;
use cryptomem_wire::protocol::{Request, Response, SetCondition};

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
            let c = cryptomem_client::Client::connect(config).await.unwrap();
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
async fn a_log_that_cannot_create_its_segment_refuses_writes_but_serves_reads() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.set("before", b"kept").await.unwrap();
    // The next segment (starting after the cut SAVE takes) will be on a full disk.
    std::os::unix::fs::symlink("/dev/full", server.data_dir.join(segment_name(2))).unwrap();
    c.save().await.unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if info_value(&c.info().await.unwrap(), "writes_enabled") == "0" {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "INFO reports writes disabled");
    let err = c.set("after", b"x").await.unwrap_err();
    assert!(matches!(&err, Error::Server { code, .. } if code == "IOERR"), "{err}");
    assert!(err.to_string().contains("No space left") && err.to_string().contains("retrying"), "{err}");
    assert_eq!(c.get("before").await.unwrap().unwrap(), b"kept", "reads keep working");
    assert!(info_value(&c.info().await.unwrap(), "last_error").contains("No space left"));
}

fn full_disk() -> (FaultyDisk, impl FnOnce(&mut cryptomem_server::server::ServerConfig)) {
    let disk = FaultyDisk::default();
    let config_disk = disk.clone();
    (disk, move |cfg: &mut cryptomem_server::server::ServerConfig| cfg.disk = Arc::new(config_disk))
}

/// Regression (issue 9, items 3 and 4): under `always` a failed log write
/// closed the connection and dropped every reply of the batch, and the
/// writes it failed stayed readable until restart.
#[tokio::test]
async fn with_fsync_always_a_log_failure_answers_ioerr_in_place_and_stops_the_server() {
    let (disk, use_disk) = full_disk();
    let server = TestServer::start_with(|cfg| {
        use_disk(cfg);
        cfg.persist.fsync = FsyncPolicy::Always;
    })
    .await;
    let c = server.client().await;
    c.set_raw_with("before", &b"kept"[..], SetOptions::default()).await.unwrap();
    let mut raw = RawConn::authed(&server).await;
    disk.0.full.store(true, SeqCst);
    let batch = [
        Request::Set { key: "a".into(), value: "1".into(), ttl: None, condition: SetCondition::Always },
        Request::Get { key: "before".into() },
        Request::Set { key: "b".into(), value: "2".into(), ttl: None, condition: SetCondition::Always },
        Request::Ping { message: Bytes::new() },
    ];
    let mut wire = Vec::new();
    for request in &batch {
        wire.extend(raw.seal(request));
    }
    raw.write_wire(&wire).await.unwrap();
    let first = raw.recv().await;
    assert_error(first.clone(), "IOERR");
    assert!(format!("{first:?}").contains("not durable"), "{first:?}");
    assert_eq!(raw.recv().await, Some(Response::ok(Bytes::from_static(b"kept"))), "the read is answered");
    assert_error(raw.recv().await, "IOERR");
    assert_eq!(raw.recv().await, Some(Response::ok(Bytes::from_static(b"PONG"))));
    raw.assert_closed().await;

    let (tmp, token) = (server.tempdir(), server.token.clone());
    let err = server.exited().await.unwrap_err();
    assert!(err.to_string().contains("No space left") && err.to_string().contains("fatal"), "{err}");
    // Nothing a client was told failed comes back; what it was told succeeded does.
    disk.0.full.store(false, SeqCst);
    let server = TestServer::start_in(tmp, Some(token), |_| {}).await;
    let c = server.client().await;
    assert_eq!(c.get_raw("before").await.unwrap().unwrap(), &b"kept"[..]);
    assert_eq!(c.get_raw("a").await.unwrap(), None);
    assert_eq!(c.get_raw("b").await.unwrap(), None);
}

/// Regression (issue 9, item 2): under `everysec` a failed write dropped
/// acknowledged records from the buffer.
#[tokio::test]
async fn with_fsync_everysec_writes_acknowledged_before_a_full_disk_survive_it() {
    let (disk, use_disk) = full_disk();
    let server = TestServer::start_with(use_disk).await;
    let c = server.client().await;
    disk.0.full.store(true, SeqCst);
    let acknowledged = write_until_refused(&c).await;
    let info = c.info().await.unwrap();
    assert_eq!(info_value(&info, "writes_enabled"), "0");
    assert!(info_value(&info, "log_not_durable_records").parse::<u64>().unwrap() >= 1);
    disk.0.full.store(false, SeqCst);
    assert!(eventually(|| std::fs::read_dir(&server.data_dir).is_ok() && disk.0.failed_appends.load(SeqCst) > 0).await);
    let mut accepted = false;
    for _ in 0..100 {
        if c.set("after", b"a").await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "writes are accepted once the disk has room");
    drop(c);
    // A crash, not a graceful stop: only the log can have them.
    let (tmp, token) = (server.tempdir(), server.token.clone());
    server.crash().await;
    let server = TestServer::start_in(tmp, Some(token), |_| {}).await;
    let c = server.client().await;
    assert_all_there(&c, acknowledged).await;
    assert_eq!(c.get("after").await.unwrap().unwrap(), b"a");
}

/// Writes k0, k1, ... until the server refuses one with `IOERR` (a full
/// disk); returns the numbers of the acknowledged ones.
async fn write_until_refused(c: &Client) -> Vec<u32> {
    let mut acknowledged = Vec::new();
    for i in 0..10_000 {
        match c.set(format!("k{i}"), b"v").await {
            Ok(()) => acknowledged.push(i),
            Err(e) => {
                assert!(e.to_string().contains("IOERR") && e.to_string().contains("No space left"), "{e}");
                break;
            }
        }
    }
    assert!(!acknowledged.is_empty() && acknowledged.len() < 10_000, "{} acknowledged", acknowledged.len());
    acknowledged
}

async fn assert_all_there(c: &Client, acknowledged: Vec<u32>) {
    for i in acknowledged {
        assert_eq!(c.get(format!("k{i}")).await.unwrap().as_deref(), Some(&b"v"[..]), "k{i}");
    }
}

/// The README's promise for `everysec` at a graceful stop while the log
/// cannot be written: the shutdown snapshot (on a disk with room) keeps
/// every acknowledged write.
#[tokio::test]
async fn a_graceful_stop_while_the_log_is_stalled_snapshots_what_was_acknowledged() {
    let (disk, use_disk) = full_disk();
    let server = TestServer::start_with(use_disk).await;
    let c = server.client().await;
    disk.0.full.store(true, SeqCst);
    let acknowledged = write_until_refused(&c).await;
    assert_eq!(info_value(&c.info().await.unwrap(), "writes_enabled"), "0");
    drop(c);
    let (tmp, token) = (server.tempdir(), server.token.clone());
    let started = std::time::Instant::now();
    server.stop().await;
    let stop_took = started.elapsed();
    // The log never got them: only the shutdown snapshot can hold them.
    // (And the stop does not wait out the log's 10 s of retries for records
    // the snapshot already holds.)
    let server = TestServer::start_in(tmp, Some(token), |_| {}).await;
    let c = server.client().await;
    assert_all_there(&c, acknowledged).await;
    assert!(stop_took < Duration::from_secs(30), "stop took {stop_took:?}");
}

#[tokio::test]
async fn after_a_restart_the_log_on_disk_counts_towards_the_next_snapshot() {
    let server = TestServer::start().await;
    let c = server.client().await;
    for i in 0..50 {
        c.set(format!("k{i}"), b"v").await.unwrap();
    }
    drop(c);
    let (tmp, token) = (server.tempdir(), server.token.clone());
    server.crash().await;
    let server = TestServer::start_in(Arc::clone(&tmp), Some(token.clone()), |_| {}).await;
    let info = server.client().await.info().await.unwrap();
    assert_eq!(info_value(&info, "changes_since_snapshot"), "50", "regression: was 0 after a restart");
    assert!(info_value(&info, "log_bytes_since_snapshot").parse::<u64>().unwrap() > 50 * 20);
    // A graceful stop with no new writes still snapshots what the log replayed.
    let data_dir = server.data_dir.clone();
    server.stop().await;
    let listing = cryptomem_server::persist::list(&data_dir).unwrap();
    assert_eq!(listing.snapshots.last().map(|(cut, _)| *cut), Some(50), "{listing:?}");
}

#[tokio::test]
async fn temp_files_of_interrupted_snapshots_are_removed_at_start() {
    let server = TestServer::start().await;
    let (tmp, token, dir) = (server.tempdir(), server.token.clone(), server.data_dir.clone());
    server.stop().await;
    std::fs::write(dir.join(".tmp-snapshot-Ab12Cd"), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join(".tmp-snapshot-not-ours.txt"), b"someone else's").unwrap();
    let server = TestServer::start_in(tmp, Some(token), |_| {}).await;
    assert!(!dir.join(".tmp-snapshot-Ab12Cd").exists(), "the leftover is gone");
    assert!(dir.join(".tmp-snapshot-not-ours.txt").exists(), "only names the server writes are removed");
    server.stop().await;
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_dir() {
    let server = TestServer::start().await;
    let err = cryptomem_server::server::DataDir::open_or_init(
        &server.data_dir,
        cryptomem_server::auth::HashParams::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("in use by another cryptomem process"), "{err}");
}

/// Regression (issue 9, item 10): starting on a full disk printed one ENOSPC
/// three times and named the data dir; the error names the log segment the
/// start could not create, and says "No space left" once.
#[tokio::test]
async fn a_start_on_a_full_disk_names_the_log_segment_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::default();
    disk.0.full.store(true, SeqCst);
    let err = cryptomem_server::persist::Persistence::open_on(
        Arc::new(disk),
        dir.path(),
        cryptomem_server::store::Store::new(4),
        Clock::System,
        cryptomem_server::persist::PersistConfig::default(),
    )
    .unwrap_err();
    let top = cryptomem_server::server::ServerError::Persist(err);
    let text = cryptomem_util::error_text(&top);
    assert!(text.contains(&segment_name(1)), "{text}");
    assert_eq!(text.matches("No space left").count(), 1, "{text}");
}

/// Issue 11, item 5: a disk slower than the writes makes writers wait (the
/// log buffer stops at its limit), nothing is refused, and every
/// acknowledged write is in the log once the disk catches up.
#[tokio::test]
async fn a_slow_disk_slows_writers_down_and_loses_nothing() {
    let (disk, use_disk) = full_disk();
    let server = TestServer::start_with(use_disk).await;
    // Each write takes a second: the writer falls behind.
    disk.0.append_delay_ms.store(1000, SeqCst);
    let value = vec![7u8; 64 << 10];
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = server.client().await;
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            // 4 x 100 x 64 KiB: 25 MiB, more than the 16 MiB backlog limit.
            for i in 0..100 {
                c.set(format!("w{w}-{i}"), &value).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let c = server.client().await;
    let info = c.info().await.unwrap();
    assert!(info_value(&info, "log_backlog_waits").parse::<u64>().unwrap() > 0, "writers waited:\n{info}");
    assert_eq!(info_value(&info, "writes_enabled"), "1", "nothing refused");
    disk.0.append_delay_ms.store(0, SeqCst);
    assert!(
        common::eventually_async(|| async {
            let info = c.info().await.unwrap();
            info_value(&info, "log_durable_seq") == info_value(&info, "log_last_seq")
        })
        .await
    );
    assert_eq!(info_value(&c.info().await.unwrap(), "log_backlogged"), "0", "released");
    drop(c);
    // A crash: only the log can have them.
    let (tmp, token) = (server.tempdir(), server.token.clone());
    server.crash().await;
    let server = TestServer::start_in(tmp, Some(token), |_| {}).await;
    let c = server.client().await;
    assert_eq!(c.dbsize().await.unwrap(), 400);
    for w in 0..4 {
        for i in 0..100 {
            assert_eq!(c.get(format!("w{w}-{i}")).await.unwrap().as_deref(), Some(&value[..]), "w{w}-{i}");
        }
    }
}

/// Not a test: what a stalled disk does to write throughput. Run with
/// `cargo test --release --test persistence -- --ignored --nocapture
/// throughput_while_the_disk_stalls`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, run by hand"]
async fn throughput_while_the_disk_stalls() {
    let (disk, use_disk) = full_disk();
    let server = TestServer::start_with(use_disk).await;
    println!("{:>18} {:>12} {:>10}", "each write takes", "SET ops/s", "waits");
    for delay_ms in [0u64, 10, 100, 1000] {
        disk.0.append_delay_ms.store(delay_ms, SeqCst);
        let c = server.client().await;
        let waits_before: u64 = info_value(&c.info().await.unwrap(), "log_backlog_waits").parse().unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(4);
        let mut writers = Vec::new();
        for w in 0..4 {
            let c = server.client().await;
            writers.push(tokio::spawn(async move {
                let mut done = 0u64;
                while std::time::Instant::now() < until {
                    let mut p = c.pipeline();
                    for i in 0..64 {
                        p.set(format!("d{delay_ms}-w{w}-{}", done + i), [9u8; 100]).unwrap();
                    }
                    p.execute().await.unwrap();
                    done += 64;
                }
                done
            }));
        }
        let mut ops = 0;
        for w in writers {
            ops += w.await.unwrap();
        }
        disk.0.append_delay_ms.store(0, SeqCst);
        assert!(
            common::eventually_async(|| async {
                let info = c.info().await.unwrap();
                info_value(&info, "log_backlogged") == "0"
            })
            .await
        );
        let info = c.info().await.unwrap();
        let waits = info_value(&info, "log_backlog_waits").parse::<u64>().unwrap() - waits_before;
        println!("{:>15} ms {:>12} {:>10}", delay_ms, ops / 4, waits);
    }
}
