//! Rotating the server's static key under a running server: connections
//! already open keep working, new clients pinning the old or the new key
//! connect during the grace period, and only the new key afterwards.

mod common;

use std::time::Duration;

use common::{TestServer, eventually_async};
use cryptomem_client::{Client, Error};
use cryptomem_server::server::server_keys;
use cryptomem_wire::secure::{RejectReason, SecureError, parse_public_key};

fn refused_as_wrong_key(result: Result<Client, Error>) -> bool {
    matches!(result, Err(Error::Handshake { source: SecureError::Rejected(Some(RejectReason::HandshakeFailed)), .. }))
}

#[tokio::test]
async fn a_key_rotates_while_clients_stay_connected() {
    let server = TestServer::start().await;
    let old_key = server.public_key;
    let before = server.client().await;
    before.set("k", b"before").await.unwrap();
    // A pipeline of reads keeps going across the rotation on the open connection.
    let busy = before.clone();
    let reader = tokio::spawn(async move {
        for _ in 0..200 {
            assert_eq!(busy.get("k").await.unwrap().as_deref(), Some(&b"before"[..]));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let rotation = server_keys::rotate(&server.data_dir, Duration::from_secs(3600), server.clock.now_ms()).unwrap();
    let new_key = parse_public_key(&rotation.new_public).unwrap();
    assert_eq!(rotation.old_public, cryptomem_wire::secure::public_key_hex(&old_key));

    let mut pins_new = server.config();
    pins_new.server_public_key = new_key;
    assert!(
        eventually_async(|| {
            let config = pins_new.clone();
            async move { Client::connect(config).await.is_ok() }
        })
        .await,
        "the server picks the new key up within seconds"
    );
    reader.await.unwrap();
    assert_eq!(before.get("k").await.unwrap().as_deref(), Some(&b"before"[..]), "open connections are unaffected");

    // During the grace period: either pin connects, and so does a client pinning both.
    let with_new = Client::connect(pins_new.clone()).await.unwrap();
    with_new.set("k", b"new pin").await.unwrap();
    let with_old = server.client().await;
    assert_eq!(with_old.get("k").await.unwrap().as_deref(), Some(&b"new pin"[..]));
    let mut pins_both = server.config();
    pins_both.previous_server_public_keys = vec![new_key];
    Client::connect(pins_both.clone()).await.unwrap().ping().await.unwrap();

    // After the grace period: only the new key.
    server.clock.advance(Duration::from_secs(3601));
    assert!(refused_as_wrong_key(Client::connect(server.config()).await), "the old key is refused after the grace");
    Client::connect(pins_new).await.unwrap().ping().await.unwrap();
    Client::connect(pins_both).await.unwrap().ping().await.unwrap();
    with_old.ping().await.unwrap();
    before.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_client_pinning_the_new_key_first_falls_back_to_the_old_one() {
    // Credentials distributed before the server has rotated: new key first,
    // then the one the server still uses.
    let server = TestServer::start().await;
    let mut config = server.config();
    let next = cryptomem_wire::secure::ServerIdentity::generate().unwrap();
    config.previous_server_public_keys = vec![server.public_key];
    config.server_public_key = next.public();
    let client = Client::connect(config.clone()).await.unwrap();
    client.set("a", b"1").await.unwrap();
    config.previous_server_public_keys.clear();
    assert!(refused_as_wrong_key(Client::connect(config).await));
    server.stop().await;
}
