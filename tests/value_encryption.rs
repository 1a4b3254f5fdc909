//! The server only ever holds ciphertext bound to its key name.

mod common;

use common::TestServer;
use cryptomem_client::Error;
use cryptomem_client::value_crypto::{Keyring, SEALED_OVERHEAD, ValueCryptoError, ValueKey};
use cryptomem_client::{Client, SetOptions};

#[tokio::test]
async fn the_server_stores_only_ciphertext() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let secret = b"card number 4111 1111 1111 1111";
    c.set("card", secret).await.unwrap();
    let stored = server.store.get(b"card", server.clock.now_ms()).unwrap().value().to_vec();
    assert_eq!(stored.len(), secret.len() + SEALED_OVERHEAD);
    assert!(!stored.windows(4).any(|w| secret.windows(4).any(|s| s == w)), "no 4-byte run of the plaintext is stored");
    assert_eq!(c.get_raw("card").await.unwrap().unwrap().as_ref(), stored.as_slice());
}

#[tokio::test]
async fn a_value_moved_to_another_key_fails_to_open() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.set("a", b"for a only").await.unwrap();
    // The server (or anyone with write access) copies a's ciphertext to b.
    let sealed = c.get_raw("a").await.unwrap().unwrap();
    c.set_raw_with("b", sealed, SetOptions::default()).await.unwrap();
    let err = c.get("b").await.unwrap_err();
    assert!(matches!(err, Error::ValueCrypto(ValueCryptoError::Authentication)), "{err}");
    assert!(err.to_string().contains("moved"), "{err}");
    assert_eq!(c.get("a").await.unwrap().unwrap(), b"for a only");
}

#[tokio::test]
async fn a_wrong_value_key_fails_with_a_clear_error() {
    let server = TestServer::start().await;
    server.client().await.set("k", b"v").await.unwrap();
    let other =
        Client::connect(server.config().with_keyring(Keyring::new(ValueKey::from_bytes([8; 32])))).await.unwrap();
    let err = other.get("k").await.unwrap_err();
    assert!(matches!(err, Error::ValueCrypto(ValueCryptoError::UnknownKey { .. })), "{err}");
    assert!(err.to_string().contains("wrong value key"), "{err}");
    // Rotation: the new key seals, the old one still opens old values.
    let rotated = Client::connect(
        server
            .config()
            .with_keyring(Keyring::new(ValueKey::from_bytes([8; 32])).with_previous([ValueKey::from_bytes([7; 32])])),
    )
    .await
    .unwrap();
    assert_eq!(rotated.get("k").await.unwrap().unwrap(), b"v");
}

#[tokio::test]
async fn a_client_without_value_key_can_only_use_raw_calls() {
    let server = TestServer::start().await;
    let mut config = server.config();
    config.keyring = None;
    let c = Client::connect(config).await.unwrap();
    assert!(matches!(c.set("k", b"v").await.unwrap_err(), Error::NoValueKey));
    assert!(matches!(c.get("k").await.unwrap_err(), Error::NoValueKey));
    c.set_raw_with("k", &b"opaque"[..], SetOptions::default()).await.unwrap();
    assert!(c.exists("k").await.unwrap());
}

#[tokio::test]
async fn tampered_ciphertext_on_the_server_is_detected() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.set("k", b"value").await.unwrap();
    let mut sealed = c.get_raw("k").await.unwrap().unwrap().to_vec();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x80;
    c.set_raw_with("k", sealed, SetOptions::default()).await.unwrap();
    assert!(matches!(c.get("k").await.unwrap_err(), Error::ValueCrypto(ValueCryptoError::Authentication)));
}
