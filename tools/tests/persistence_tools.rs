//! `inspect`, `verify`, `compact` and `repair` on data dirs a real server wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, ClientConfig, SetOptions};
use cryptomem_server::auth::HashParams;
use cryptomem_server::persist::list;
use cryptomem_server::server::DataDir;
use cryptomem_server::server::{Server, ServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_cryptomem-tool");

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), cryptomem_server::server::ServerError>>,
    client: Client,
}

async fn start(dir: &Path) -> Running {
    let config =
        ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.to_path_buf(), ..ServerConfig::default() };
    let (data, report) = DataDir::open_or_init(dir, HashParams::default()).unwrap();
    let token = match report {
        Some(r) => {
            std::fs::write(dir.join("test-token"), r.admin_token.expose().as_bytes()).unwrap();
            r.admin_token
        }
        None => cryptomem_wire::Token::parse(&std::fs::read_to_string(dir.join("test-token")).unwrap()).unwrap(),
    };
    let key = data.identity().public();
    let server = Server::bind(config, data).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let config =
        ClientConfig::new(addr.to_string(), key, token).with_keyring(Keyring::new(ValueKey::from_bytes([4; 32])));
    Running { stop, task, client: Client::connect(config).await.unwrap() }
}

impl Running {
    /// Stops without the graceful path, and waits until its last task let go of the data dir.
    async fn crash(self, dir: &Path) {
        self.task.abort();
        let _ = self.task.await;
        drop(self.client);
        for _ in 0..250 {
            if cryptomem_server::server::lock_data_dir(dir).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the aborted server never released {}", dir.display());
    }

    async fn stop(self) {
        drop(self.client);
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

/// A data dir with a snapshot (keys a0..a49, one expiring soon) and a log after it (b0..b29).
async fn populated() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = start(&dir).await;
    for i in 0..50 {
        s.client.set(format!("a{i}"), format!("secret value {i}")).await.unwrap();
    }
    s.client.set_with("short", b"x", SetOptions::ttl(Duration::from_millis(1))).await.unwrap();
    s.client.save().await.unwrap();
    for i in 0..30 {
        s.client.set(format!("b{i}"), format!("secret value {i}")).await.unwrap();
    }
    s.client.delete("a0").await.unwrap();
    // A graceful stop snapshots everything; restart to get records that
    // exist only in the log.
    s.stop().await;
    let s = start(&dir).await;
    for i in 0..10 {
        s.client.set(format!("c{i}"), b"tail").await.unwrap();
    }
    // Leave without a graceful stop's snapshot: abort the task (the log is flushed to the OS within ms).
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.crash(&dir).await;
    (tmp, dir)
}

fn tool(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN).args(args).arg("--data").arg(dir).stdin(Stdio::null()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn newest_segment(dir: &Path) -> PathBuf {
    list(dir).unwrap().segments.last().unwrap().1.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_files_counts_and_keys_without_values() {
    let (_tmp, dir) = populated().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let out = tool(&["inspect", "--keys"], &dir);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("snapshot snapshot-"), "{text}");
    assert!(text.contains("crc ok"), "{text}");
    assert!(text.contains("log      log-"), "{text}");
    assert!(text.contains("keys:              89 live"), "{text}");
    assert!(text.contains("  b29  "), "{text}");
    assert!(text.lines().filter(|l| l.contains(" bytes  version ")).count() >= 89, "versions listed: {text}");
    assert!(!text.contains("secret value"), "values are never decrypted or shown");

    let out = tool(&["inspect", "--json"], &dir);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["keys"], 89);
    assert!(json["snapshots"].as_array().unwrap().len() == 1);
    assert!(json.get("key_list").is_none());
    let out = tool(&["inspect", "--json", "--keys"], &dir);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<u64> =
        json["key_list"].as_array().unwrap().iter().map(|k| k["version"].as_u64().unwrap()).collect();
    assert!(versions.iter().all(|v| *v > 0), "every key has its last change's sequence number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_clean_then_names_the_damage() {
    let (_tmp, dir) = populated().await;
    let out = tool(&["verify"], &dir);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ok:"));

    let seg = newest_segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[16 + 8 + 2] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let out = tool(&["verify"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&seg.file_name().unwrap().to_string_lossy().to_string()) && text.contains("offset 16"),
        "{text}"
    );
    assert!(text.contains("cryptomem-tool repair"), "{text}");

    bytes[16 + 8 + 2] ^= 1;
    // A flipped bit in the first record's length: not a torn tail, records follow.
    bytes[17] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = tool(&["verify"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("corrupted at byte offset 16") && text.contains("intact record follows"), "{text}");
    assert!(!text.contains("torn"), "{text}");

    bytes[17] ^= 0x10;
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&seg, &bytes).unwrap();
    let out = tool(&["verify"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("torn tail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_damaged_snapshot() {
    let (_tmp, dir) = populated().await;
    let snap = list(&dir).unwrap().snapshots.last().unwrap().1.clone();
    let original = std::fs::read(&snap).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&snap, bytes).unwrap();
    let out = tool(&["verify"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("corrupted at byte offset"), "{}", stdout(&out));

    std::fs::write(&snap, &original[..original.len() - 100]).unwrap();
    let out = tool(&["verify"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("truncated"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_refuses_while_running_and_recovers_to_the_same_state() {
    let (_tmp, dir) = populated().await;
    let running = start(&dir).await;
    let before: Vec<_> = {
        let keys: Vec<String> = (0..50)
            .map(|i| format!("a{i}"))
            .chain((0..30).map(|i| format!("b{i}")))
            .chain((0..10).map(|i| format!("c{i}")))
            .collect();
        running.client.mget_raw(&keys).await.unwrap()
    };
    let out = tool(&["compact"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
    running.crash(&dir).await;

    let out = tool(&["compact"], &dir);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let listing = list(&dir).unwrap();
    assert_eq!((listing.snapshots.len(), listing.segments.len()), (1, 0), "{listing:?}");
    assert!(tool(&["verify"], &dir).status.success());

    let s = start(&dir).await;
    let keys: Vec<String> = (0..50)
        .map(|i| format!("a{i}"))
        .chain((0..30).map(|i| format!("b{i}")))
        .chain((0..10).map(|i| format!("c{i}")))
        .collect();
    assert_eq!(s.client.mget_raw(&keys).await.unwrap(), before, "byte-identical state after compaction");
    assert_eq!(s.client.dbsize().await.unwrap(), 89, "the expired key was dropped");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_cuts_at_the_last_good_record_after_confirmation() {
    let (_tmp, dir) = populated().await;
    let seg = newest_segment(&dir);
    let original = std::fs::read(&seg).unwrap();
    // Damage the third record of the newest segment.
    let mut offset = 16usize;
    for _ in 0..2 {
        offset += 12 + u32::from_be_bytes(original[offset..offset + 4].try_into().unwrap()) as usize;
    }
    let mut damaged = original.clone();
    damaged[offset + 9] ^= 1;
    std::fs::write(&seg, &damaged).unwrap();

    let declined = tool(&["repair"], &dir);
    assert_eq!(declined.status.code(), Some(1));
    assert!(stdout(&declined).contains(&format!("damaged at byte offset {offset}")), "{}", stdout(&declined));
    assert_eq!(std::fs::read(&seg).unwrap(), damaged, "declining changes nothing");

    let out = tool(&["repair", "--yes"], &dir);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(std::fs::read(&seg).unwrap(), &original[..offset]);
    let mut backup = seg.clone().into_os_string();
    backup.push(format!(".cut-{offset}.bak"));
    assert_eq!(std::fs::read(PathBuf::from(backup)).unwrap(), &damaged[offset..]);
    assert!(tool(&["verify"], &dir).status.success());
    let s = start(&dir).await;
    assert_eq!(s.client.get("c1").await.unwrap().unwrap(), b"tail");
    assert_eq!(s.client.get("c2").await.unwrap(), None, "records from the damage on are gone");
    s.stop().await;
}
