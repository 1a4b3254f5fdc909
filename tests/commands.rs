//! Every command through the real client against a real server.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawConn, TestServer, assert_error, eventually};
use cryptomem_client::{KeyTtl, SetOptions};
use cryptomem_wire::protocol::{Request, Response, Status};

#[tokio::test]
async fn ping_get_set_delete_exists() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.ping().await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);
    assert!(!c.exists("k").await.unwrap());
    c.set("k", b"value").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"value"[..]));
    assert!(c.exists("k").await.unwrap());
    c.set("k", b"").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b""[..]), "empty values are values");
    assert!(c.delete("k").await.unwrap());
    assert!(!c.delete("k").await.unwrap());
    assert_eq!(c.get("k").await.unwrap(), None);
    server.stop().await;
}

#[tokio::test]
async fn ping_echoes_a_message() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let pong = raw.call(&Request::Ping { message: Bytes::new() }).await.unwrap();
    assert_eq!(pong.body.as_ref(), b"PONG");
    let echo = raw.call(&Request::Ping { message: Bytes::from_static(b"hi") }).await.unwrap();
    assert_eq!(echo.body.as_ref(), b"hi");
}

#[tokio::test]
async fn set_nx_and_xx() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert!(!c.set_with("k", b"1", SetOptions::default().only_if_present()).await.unwrap());
    assert_eq!(c.get("k").await.unwrap(), None);
    assert!(c.set_with("k", b"1", SetOptions::default().only_if_absent()).await.unwrap());
    assert!(!c.set_with("k", b"2", SetOptions::default().only_if_absent()).await.unwrap());
    assert_eq!(c.get("k").await.unwrap().unwrap(), b"1");
    assert!(c.set_with("k", b"3", SetOptions::default().only_if_present()).await.unwrap());
    assert_eq!(c.get("k").await.unwrap().unwrap(), b"3");
}

#[tokio::test]
async fn ttl_expire_persist_and_expiry() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(c.ttl("k").await.unwrap(), KeyTtl::Missing);
    assert!(!c.expire("k", Duration::from_secs(1)).await.unwrap());
    assert_eq!(c.persist("k").await.unwrap(), None);

    c.set("k", b"v").await.unwrap();
    assert_eq!(c.ttl("k").await.unwrap(), KeyTtl::Persistent);
    assert_eq!(c.persist("k").await.unwrap(), Some(false));
    assert!(c.expire("k", Duration::from_secs(10)).await.unwrap());
    assert_eq!(c.ttl("k").await.unwrap(), KeyTtl::ExpiresIn(Duration::from_secs(10)), "the manual clock has not moved");
    assert_eq!(c.persist("k").await.unwrap(), Some(true));
    assert_eq!(c.ttl("k").await.unwrap(), KeyTtl::Persistent);

    c.set_with("short", b"v", SetOptions::ttl(Duration::from_millis(1500))).await.unwrap();
    c.set_with("long", b"v", SetOptions::ttl(Duration::from_secs(60))).await.unwrap();
    server.clock.advance(Duration::from_millis(1000));
    assert_eq!(c.ttl("short").await.unwrap(), KeyTtl::ExpiresIn(Duration::from_millis(500)));
    assert_eq!(c.get("short").await.unwrap().unwrap(), b"v");
    server.clock.advance(Duration::from_millis(500));
    assert_eq!(c.get("short").await.unwrap(), None, "expired keys are never returned");
    assert!(!c.exists("short").await.unwrap());
    assert_eq!(c.ttl("short").await.unwrap(), KeyTtl::Missing);
    assert_eq!(c.get("long").await.unwrap().unwrap(), b"v");
    // The janitor reclaims the expired key in the background.
    let store = server.store.clone();
    assert!(eventually(|| store.len() == 2).await, "janitor reclaims the expired key");
    assert_eq!(c.dbsize().await.unwrap(), 2);
    assert!(c.info().await.unwrap().contains("expired_keys:1"));
}

#[tokio::test]
async fn mget_mset_dbsize() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.mset(&[("a", "1"), ("b", "2"), ("c", "3")], None).await.unwrap();
    assert_eq!(c.dbsize().await.unwrap(), 3);
    let got = c.mget(&["a", "missing", "c"]).await.unwrap();
    assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
    c.mset(&[("t1", "x"), ("t2", "y")], Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(c.ttl("t2").await.unwrap(), KeyTtl::ExpiresIn(Duration::from_secs(5)));
    server.clock.advance(Duration::from_secs(5));
    assert_eq!(c.mget(&["t1", "t2", "a"]).await.unwrap(), vec![None, None, Some(b"1".to_vec())]);
}

#[tokio::test]
async fn info_reports_counts_memory_uptime_connections() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.set("k", b"v").await.unwrap();
    let info = c.info().await.unwrap();
    for field in [
        "uptime_seconds:",
        "connected_clients:1",
        "total_connections_received:1",
        "keys:1",
        "used_memory_dataset:",
        "used_memory_rss:",
        "total_commands_processed:",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
}

#[tokio::test]
async fn malformed_requests_get_errors_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("unknown command", frame(99, b"", b"", 0)),
        ("GET without key", frame(2, b"", b"", 0)),
        ("GET with value", frame(2, b"k", b"v", 0)),
        ("negative ttl", frame(1, b"k", b"v", -5)),
        ("EXPIRE without ttl", frame(7, b"k", b"", 0)),
        ("key over the limit", frame(2, &[b'k'; 2000], b"", 0)),
        ("MGET count 0", frame(10, b"", &0u32.to_be_bytes(), 0)),
        ("MGET truncated list", frame(10, b"", &[0, 0, 0, 2, 0, 1, b'a'], 0)),
        ("MSET trailing bytes", frame(11, b"", &[0, 0, 0, 1, 0, 1, 0, 0, 0, 1, b'a', b'v', 9], 0)),
    ];
    for (what, bytes) in bad {
        raw.send_plain(&bytes).await;
        let r = raw.recv().await.unwrap_or_else(|| panic!("{what}: connection closed"));
        assert_eq!(r.status, Status::Error, "{what}");
        assert!(r.error_parts().unwrap().0 == "ERR", "{what}: {r:?}");
    }
    assert_eq!(raw.call(&Request::DbSize).await.unwrap(), Response::ok(Bytes::copy_from_slice(&0u64.to_be_bytes())));
}

#[tokio::test]
async fn pipelined_requests_answer_in_order() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let mut batch = Vec::new();
    for i in 0..500u32 {
        let key = Bytes::from(format!("k{i}"));
        cryptomem_wire::protocol::encode_request(
            &Request::Set {
                key: key.clone(),
                value: Bytes::from(i.to_be_bytes().to_vec()),
                ttl: None,
                condition: Default::default(),
            },
            &mut batch,
        )
        .unwrap();
        cryptomem_wire::protocol::encode_request(&Request::Get { key }, &mut batch).unwrap();
    }
    raw.send_plain(&batch).await;
    for i in 0..500u32 {
        assert_eq!(raw.recv().await.unwrap(), Response::ok_empty());
        assert_eq!(raw.recv().await.unwrap().body.as_ref(), i.to_be_bytes());
    }
}

#[tokio::test]
async fn mget_reply_over_the_value_limit_is_refused() {
    let server = TestServer::start_with(|c| c.limits.max_value_len = 4096).await;
    let c = server.client().await;
    c.set_raw_with("a", vec![0u8; 3000], SetOptions::default()).await.unwrap();
    c.set_raw_with("b", vec![0u8; 3000], SetOptions::default()).await.unwrap();
    let err = c.mget_raw(&["a", "b"]).await.unwrap_err();
    assert!(matches!(&err, cryptomem_client::Error::Server { code, .. } if code == "TOOBIG"), "{err}");
    assert_eq!(c.mget_raw(&["a"]).await.unwrap().len(), 1, "connection still usable");
}

#[tokio::test]
async fn auth_twice_and_wrong_token_behaviour() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let again = raw.call(&Request::Auth { token: common::c_token(&server) }).await.unwrap();
    assert_eq!(again, Response::ok_empty());
    assert_error(raw.call(&Request::Auth { token: Bytes::from_static(b"cmt_000000000000_00") }).await, "WRONGPASS");
    raw.assert_closed().await;
}

#[tokio::test]
async fn a_second_auth_switches_the_connection_to_the_new_token() {
    let server = TestServer::start().await;
    let reader = server.client().await.token_add(cryptomem_wire::Role::Read, vec![], "reader").await.unwrap();
    let mut raw = RawConn::authed(&server).await;
    let set = Request::Set { key: "k".into(), value: "v".into(), ttl: None, condition: Default::default() };
    assert_eq!(raw.call(&set).await.unwrap(), Response::ok_empty());
    let token = Bytes::from(reader.expose().as_bytes().to_vec());
    assert_eq!(raw.call(&Request::Auth { token }).await.unwrap(), Response::ok_empty());
    assert_error(raw.call(&set).await, "NOPERM");
    assert_eq!(raw.call(&Request::Get { key: "k".into() }).await.unwrap().body.as_ref(), b"v");
}

#[tokio::test]
async fn a_malformed_first_auth_is_err_and_closes() {
    let server = TestServer::start().await;
    let mut raw = RawConn::handshaken(&server).await;
    // AUTH takes no key.
    raw.send_plain(&frame(cryptomem_wire::protocol::command::AUTH, b"key", b"token", 0)).await;
    assert_error(raw.recv().await, "ERR");
    raw.assert_closed().await;
}

fn frame(code: u8, key: &[u8], value: &[u8], ttl: i64) -> Vec<u8> {
    let mut f = b"CM".to_vec();
    f.push(code);
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.extend_from_slice(&(value.len() as u32).to_be_bytes());
    f.extend_from_slice(&ttl.to_be_bytes());
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}
