//! The client's connection pool and its reconnect backoff, against a real
//! server on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, eventually_async, info_field};
use cryptomem_client::{Backoff, Client, Error};

#[tokio::test]
async fn one_task_keeps_one_connection_and_a_busy_client_grows_to_its_limit() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().with_connections(3)).await.unwrap();
    for i in 0..100 {
        client.set(format!("k{i}"), b"v").await.unwrap();
    }
    assert_eq!(client.open_connections(), 1, "calls one after another share one connection");

    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    assert_eq!(c.get(format!("k{}", (t + i) % 100)).await.unwrap().as_deref(), Some(&b"v"[..]));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.open_connections(), 3, "64 concurrent tasks use every allowed connection");
    let info = client.info().await.unwrap();
    assert_eq!(info_field(&info, "connected_clients"), "3", "and never more");
    server.stop().await;
}

/// Accepts connections and drops them at once, counting them.
async fn counting_listener(addr: std::net::SocketAddr) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    (count, task)
}

#[tokio::test]
async fn a_down_server_is_retried_with_backoff_and_calls_fail_fast() {
    let server = TestServer::start().await;
    let (dir, token, addr) = (server.tempdir(), server.token.clone(), server.addr);
    let mut config = server.config().with_connections(2);
    config.reconnect_backoff = Backoff { initial: Duration::from_millis(200), max: Duration::from_millis(800) };
    let client = Client::connect(config).await.unwrap();
    client.set("kept", b"1").await.unwrap();
    server.stop().await;

    // Something that accepts and hangs up, in the server's place: every
    // connection attempt reaches it and is counted.
    let (attempts, listener) = counting_listener(addr).await;
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let call = Instant::now();
        let err = client.get("kept").await.unwrap_err();
        assert!(call.elapsed() < Duration::from_secs(1), "a call took {:?}: {err}", call.elapsed());
        assert!(matches!(err, Error::Connect { .. } | Error::Handshake { .. } | Error::ConnectionLost(_)), "{err}");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let attempts = attempts.load(Ordering::Relaxed);
    // Two slots, each waiting at least 100, 200, 400, 400 ms after its
    // failures: at most 5 attempts each in 1.5 s, against ~250 calls.
    assert!(calls > 100, "{calls} calls");
    assert!((2..=10).contains(&attempts), "{attempts} connection attempts for {calls} calls");
    listener.abort();
    let _ = listener.await;

    // The server comes back on the same address: calls work again within
    // one longest wait.
    let server = TestServer::start_in(dir, Some(token), |c| c.listen = addr).await;
    assert!(
        eventually_async(|| {
            let c = client.clone();
            async move { c.get("kept").await.is_ok() }
        })
        .await
    );
    assert_eq!(client.get("kept").await.unwrap().as_deref(), Some(&b"1"[..]));
    server.stop().await;
}
