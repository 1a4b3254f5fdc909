//! Data dirs written by earlier releases are read by this one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_server::persist::{PersistConfig, Persistence};
use cryptomem_server::persist::{TailMode, recover};
use cryptomem_server::store::SetCondition;
use cryptomem_server::store::{Clock, Store};

fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn check_0_1_0_keyspace(store: &Store, keyring: &Keyring) {
    let now = Clock::System.now_ms();
    let open = |key: &str| {
        let item = store.get(key.as_bytes(), now).unwrap_or_else(|| panic!("{key} is there"));
        String::from_utf8(keyring.open(key.as_bytes(), item.value()).unwrap()).unwrap()
    };
    for i in (0..20).filter(|&i| i != 3 && i != 5) {
        assert_eq!(open(&format!("k{i}")), format!("value {i}"));
    }
    assert_eq!(open("k5"), "value 5 again", "the log after the snapshot is replayed");
    assert!(store.get(b"k3", now).is_none(), "deleted in the log");
    assert!(store.expiry(b"k11", now).unwrap().is_some(), "EXPIRE replayed");
    assert_eq!(store.expiry(b"ttlkey", now).unwrap(), None, "PERSIST replayed");
    assert_eq!(store.len(), 20);
}

#[tokio::test]
async fn a_0_1_0_data_dir_with_format_1_log_segments_recovers_and_keeps_working() {
    let (_tmp, dir) = fixture("datadir-0.1.0");
    let keyring = Keyring::new(ValueKey::load(&dir.join("value.key")).unwrap());
    let config = PersistConfig::default();
    let (persistence, report) = Persistence::open(&dir, Store::new(16), Clock::System, config).unwrap();
    let store = Arc::clone(persistence.store());
    assert_eq!(report.replayed, 14, "10 SETs, DEL, EXPIRE, SET, PERSIST");
    assert!(report.segments.iter().all(|s| s.torn_at.is_none()));
    check_0_1_0_keyspace(&store, &keyring);
    // Snapshot format 1 has no versions: its keys take its cut, 11; keys the
    // log changed since take their record's sequence number.
    let now = Clock::System.now_ms();
    assert_eq!(store.get(b"k0", now).unwrap().version(), 11);
    assert!(store.get(b"k5", now).unwrap().version() > 11);
    assert!(store.get(b"k11", now).unwrap().version() > 11, "EXPIRE is a change");

    // New records go to a format 2 segment after the format 1 one; both are read.
    let sealed = keyring.seal(b"new", b"after the upgrade").unwrap();
    assert!(store.set(b"new", &sealed, None, SetCondition::Always, Clock::System.now_ms()).unwrap().outcome);
    persistence.log().close();
    let again = Store::new(16);
    let report = recover(&dir, &again, Clock::System.now_ms(), TailMode::Report).unwrap();
    assert_eq!(report.segments.len(), 2);
    let item = again.get(b"new", Clock::System.now_ms()).unwrap();
    assert_eq!(keyring.open(b"new", item.value()).unwrap(), b"after the upgrade");
    assert_eq!(again.len(), 21);
}

/// Written by the build before the workspace split (log format 2): the split
/// moved code, not formats. Values are compared byte for byte after opening.
#[tokio::test]
async fn a_data_dir_from_before_the_workspace_split_recovers_byte_identical_values() {
    let (_tmp, dir) = fixture("datadir-log-v2");
    let keyring = Keyring::new(ValueKey::load(&dir.join("value.key")).unwrap());
    let (persistence, report) =
        Persistence::open(&dir, Store::new(16), Clock::System, PersistConfig::default()).unwrap();
    let store = Arc::clone(persistence.store());
    assert_eq!(report.replayed, 14);
    check_0_1_0_keyspace(&store, &keyring);
    persistence.log().close();
    drop(persistence);
    // And through the server and the client crate, as a user sees it.
    let token = cryptomem_client::Credentials::load(&dir.join("credentials.toml")).unwrap().token;
    let tmp = Arc::new(_tmp);
    let server = common::TestServer::start_in(Arc::clone(&tmp), Some(token), |_| {}).await;
    let config = server.config().with_keyring(keyring);
    let client = cryptomem_client::Client::connect(config).await.unwrap();
    assert_eq!(client.get("k5").await.unwrap().unwrap(), b"value 5 again");
    assert_eq!(client.get("k19").await.unwrap().unwrap(), b"value 19");
    assert_eq!(client.get("k3").await.unwrap(), None);
    assert_eq!(client.dbsize().await.unwrap(), 20);
}
