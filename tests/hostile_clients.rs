//! Bad peers get a clear failure, never a panic, and the server keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawConn, TestServer, assert_error};
use cryptomem_client::Error;
use cryptomem_client::{Client, ClientConfig};
use cryptomem_wire::protocol::{Request, Response};
use cryptomem_wire::secure::{RejectReason, SecureError, ServerIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// After each attack, an honest client must still get through.
async fn still_serving(server: &TestServer) {
    let c = server.client().await;
    c.set("canary", b"alive").await.unwrap();
    assert_eq!(c.get("canary").await.unwrap().unwrap(), b"alive");
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.expect("server closes").ok();
    out
}

#[tokio::test]
async fn garbage_before_the_handshake_is_rejected() {
    let server = TestServer::start().await;
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"*1\r\n$4\r\nPING\r\n", &[0xFF; 64]] {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        assert_eq!(read_to_end(&mut s).await, vec![0, 0, RejectReason::UnsupportedPreamble as u8]);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn a_client_pinning_the_wrong_server_key_gets_a_clear_error() {
    let server = TestServer::start().await;
    let wrong = ServerIdentity::generate().unwrap().public();
    let config = ClientConfig::new(server.addr.to_string(), wrong, server.token.clone());
    let err = Client::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Handshake { source: SecureError::Rejected(Some(RejectReason::HandshakeFailed)), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("is not one the server accepts"), "{err}");
    still_serving(&server).await;
}

#[tokio::test]
async fn handshake_length_out_of_range_is_rejected() {
    let server = TestServer::start().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut hello = cryptomem_wire::secure::handshake::PREAMBLE.to_vec();
    hello.extend_from_slice(&u16::MAX.to_be_bytes());
    s.write_all(&hello).await.unwrap();
    // Its own reason: "wrong server key" would send the client's operator
    // looking in the wrong place.
    assert_eq!(read_to_end(&mut s).await, vec![0, 0, RejectReason::BadLength as u8]);
    still_serving(&server).await;
}

#[tokio::test]
async fn a_non_zero_reserved_byte_is_an_unsupported_preamble() {
    let server = TestServer::start().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut hello = cryptomem_wire::secure::handshake::PREAMBLE.to_vec();
    hello[7] = 1;
    hello.extend_from_slice(&64u16.to_be_bytes());
    hello.extend_from_slice(&[0u8; 64]);
    s.write_all(&hello).await.unwrap();
    assert_eq!(read_to_end(&mut s).await, vec![0, 0, RejectReason::UnsupportedPreamble as u8]);
    still_serving(&server).await;
}

#[tokio::test]
async fn an_oversized_value_length_is_refused_without_reading_it() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let mut header = b"CM\x01\x00\x01".to_vec();
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(&0i64.to_be_bytes());
    raw.send_plain(&header).await;
    assert_error(raw.recv().await, "TOOBIG");
    raw.assert_closed().await;
    still_serving(&server).await;
}

#[tokio::test]
async fn a_bad_magic_inside_the_channel_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    raw.send_plain(b"XX\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00k").await;
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
}

#[tokio::test]
async fn commands_before_auth_are_refused_and_close_the_connection() {
    let server = TestServer::start().await;
    for request in
        [Request::Get { key: Bytes::from_static(b"k") }, Request::Ping { message: Bytes::new() }, Request::Info]
    {
        let mut raw = RawConn::handshaken(&server).await;
        assert_error(raw.call(&request).await, "NOAUTH");
        raw.assert_closed().await;
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_closes_the_connection() {
    let server = TestServer::start().await;
    let forged = cryptomem_wire::Token::generate().unwrap();
    for token in [
        forged.expose().to_string(),
        format!("cmt_{}_{}", server.token.id(), "0".repeat(64)),
        "not a token".to_string(),
    ] {
        let mut raw = RawConn::handshaken(&server).await;
        assert_error(raw.call(&Request::Auth { token: Bytes::from(token) }).await, "WRONGPASS");
        raw.assert_closed().await;
    }
    let err = Client::connect(ClientConfig::new(server.addr.to_string(), server.public_key, forged)).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    still_serving(&server).await;
}

#[tokio::test]
async fn a_tampered_record_closes_the_connection() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let mut wire = raw.seal(&Request::DbSize);
    wire[5] ^= 0x01;
    raw.write_wire(&wire).await.unwrap();
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
    still_serving(&server).await;
}

/// Regression: valid requests followed, in the same read, by a record that
/// fails authentication got no answers, and the one PROTO took the place of
/// the first of them.
#[tokio::test]
async fn requests_before_a_bad_record_are_answered_before_the_error() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let mut wire = raw.seal(&Request::Ping { message: Bytes::from_static(b"one") });
    wire.extend(raw.seal(&Request::Ping { message: Bytes::from_static(b"two") }));
    let mut bad = raw.seal(&Request::DbSize);
    bad[5] ^= 0x01;
    wire.extend(bad);
    raw.write_wire(&wire).await.unwrap();
    assert_eq!(raw.recv().await, Some(Response::ok(Bytes::from_static(b"one"))));
    assert_eq!(raw.recv().await, Some(Response::ok(Bytes::from_static(b"two"))));
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
}

#[tokio::test]
async fn reordered_records_close_the_connection() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let first = raw.seal(&Request::DbSize);
    let second = raw.seal(&Request::DbSize);
    raw.write_wire(&second).await.unwrap();
    raw.write_wire(&first).await.unwrap();
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
}

#[tokio::test]
async fn a_replayed_record_closes_the_connection() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let wire = raw.seal(&Request::DbSize);
    raw.write_wire(&wire).await.unwrap();
    assert!(raw.recv().await.is_some());
    raw.write_wire(&wire).await.unwrap();
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
}

#[tokio::test]
async fn a_record_shorter_than_its_tag_closes_the_connection() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    raw.write_wire(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    assert_error(raw.recv().await, "PROTO");
    raw.assert_closed().await;
}

#[tokio::test]
async fn a_truncated_record_then_hangup_is_just_a_closed_connection() {
    let server = TestServer::start().await;
    let mut raw = RawConn::authed(&server).await;
    let wire = raw.seal(&Request::DbSize);
    raw.write_wire(&wire[..wire.len() - 3]).await.unwrap();
    raw.shutdown().await;
    raw.assert_closed().await;
    still_serving(&server).await;
}

#[tokio::test]
async fn silent_clients_hit_the_handshake_timeout() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(500)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(read_to_end(&mut silent).await.is_empty());
    // Handshaken but never authenticating is bounded the same way.
    let mut no_auth = RawConn::handshaken(&server).await;
    no_auth.assert_closed().await;
    assert!(server.client().await.info().await.unwrap().contains("handshake_failures:1"));
}

#[tokio::test]
async fn idle_authenticated_connections_are_closed() {
    let server = TestServer::start_with(|c| c.idle_timeout = Some(Duration::from_millis(200))).await;
    let mut raw = RawConn::authed(&server).await;
    raw.assert_closed().await;
    // The client reconnects transparently on its next call after an idle close.
    let c = server.client().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut result = c.ping().await;
    if result.is_err() {
        result = c.ping().await;
    }
    result.unwrap();
}

/// The frame of a SET of a `len`-byte value.
fn set_frame(len: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    let request = Request::Set {
        key: Bytes::from_static(b"slow"),
        value: Bytes::from(vec![7u8; len]),
        ttl: None,
        condition: Default::default(),
    };
    cryptomem_wire::protocol::encode_request(&request, &mut frame).unwrap();
    frame
}

#[tokio::test]
async fn a_request_trickled_past_the_request_timeout_is_answered_timeout() {
    // A byte every 50 ms keeps restarting the 300 ms idle timer; only the
    // request deadline can end this.
    let server = TestServer::start_with(|c| {
        c.idle_timeout = Some(Duration::from_millis(300));
        c.request_timeout = Some(Duration::from_secs(1));
    })
    .await;
    let mut raw = RawConn::authed(&server).await;
    let frame = set_frame(4096);
    let started = std::time::Instant::now();
    for chunk in frame.chunks(1).take(18) {
        let wire = raw.seal_plain(chunk);
        if raw.write_wire(&wire).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_error(raw.recv().await, "TIMEOUT");
    assert!(started.elapsed() >= Duration::from_secs(1));
    raw.assert_closed().await;
    let info = server.client().await.info().await.unwrap();
    assert_eq!(common::info_field(&info, "requests_timed_out"), "1");
    assert_eq!(common::info_field(&info, "incomplete_request_bytes"), "0");
}

#[tokio::test]
async fn a_pipelining_client_that_keeps_busy_is_not_timed_out() {
    let server = TestServer::start_with(|c| c.request_timeout = Some(Duration::from_millis(300))).await;
    let mut raw = RawConn::authed(&server).await;
    // Every write ends mid-request, so some request is always arriving, but
    // each one completes quickly: none of them is late.
    let frame = set_frame(100);
    let mut stream_bytes = Vec::new();
    for _ in 0..40 {
        stream_bytes.extend_from_slice(&frame);
    }
    for chunk in stream_bytes.chunks(frame.len() * 2 + 7) {
        raw.send_plain(chunk).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for _ in 0..40 {
        assert_eq!(raw.recv().await, Some(Response::ok_empty()));
    }
}

#[tokio::test]
async fn incomplete_requests_over_the_buffer_limit_are_answered_busy() {
    let server = TestServer::start_with(|c| {
        c.limits.max_value_len = 64 * 1024;
        c.request_buffer_limit = 200 * 1024;
    })
    .await;
    // Each holder sends 60 KiB of a 64 KiB value and stops: three fit under
    // the 200 KiB cap, the fourth goes over it.
    let frame = set_frame(64 * 1024);
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut raw = RawConn::authed(&server).await;
        raw.send_plain(&frame[..60 * 1024]).await;
        holders.push(raw);
    }
    let c = server.client().await;
    assert!(
        common::eventually_async(|| async {
            common::info_field(&c.info().await.unwrap(), "incomplete_request_bytes").parse::<usize>().unwrap()
                >= 180 * 1024
        })
        .await,
        "the server counts what the holders sent"
    );
    let mut late = RawConn::authed(&server).await;
    late.send_plain(&frame[..60 * 1024]).await;
    assert_error(late.recv().await, "BUSY");
    late.assert_closed().await;
    // Finishing a request frees its share: the holders still complete theirs.
    for raw in &mut holders {
        raw.send_plain(&frame[60 * 1024..]).await;
        assert_eq!(raw.recv().await, Some(Response::ok_empty()));
    }
    let info = c.info().await.unwrap();
    assert_eq!(common::info_field(&info, "incomplete_request_bytes"), "0");
    assert_eq!(common::info_field(&info, "requests_refused_buffer_full"), "1");
}

#[tokio::test]
async fn the_connection_limit_turns_extra_clients_away() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let a = RawConn::authed(&server).await;
    let _b = RawConn::authed(&server).await;
    let err = Client::connect(server.config()).await.unwrap_err();
    assert!(matches!(&err, Error::Handshake { source: SecureError::Rejected(Some(RejectReason::Busy)), .. }), "{err}");
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        if Client::connect(server.config()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot is usable again");
}

#[tokio::test]
async fn a_dropped_connection_fails_in_flight_calls_and_the_client_reconnects() {
    let server = TestServer::start_with(|c| c.idle_timeout = Some(Duration::from_millis(300))).await;
    let c = server.client().await;
    c.set("k", b"v").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The idle close was seen by the connection task; the next call reconnects.
    assert_eq!(c.get("k").await.unwrap().unwrap(), b"v");
}

#[tokio::test]
async fn random_bytes_inside_the_channel_never_crash_the_server() {
    let server = TestServer::start().await;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..50 {
        let mut raw = RawConn::authed(&server).await;
        let len = 1 + (round * 37) % 300;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let mut with_magic = b"CM".to_vec();
        with_magic.extend_from_slice(&junk);
        raw.send_plain(if round % 2 == 0 { &junk } else { &with_magic }).await;
        raw.shutdown().await;
        while raw.recv().await.is_some() {}
    }
    still_serving(&server).await;
    assert_eq!(
        RawConn::authed(&server).await.call(&Request::Ping { message: Bytes::new() }).await.unwrap(),
        Response::ok(Bytes::from_static(b"PONG"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_flood_is_answered_busy_instead_of_queued_forever() {
    let server = TestServer::start_with(|c| {
        c.auth.max_concurrent = 1;
        c.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    // 120 argon2id runs (19 MiB, t=2: 10-30 ms each) cannot all fit one slot in 1 s.
    let mut conns = Vec::new();
    for _ in 0..120 {
        conns.push(RawConn::handshaken(&server).await);
    }
    let token = common::c_token(&server);
    let answers = futures_join(conns.into_iter().map(|mut c| {
        let token = token.clone();
        async move { c.call(&Request::Auth { token }).await.expect("an answer, not a silent close") }
    }))
    .await;
    let busy = answers.iter().filter(|r| r.error_parts().is_some_and(|(code, _)| code == "BUSY")).count();
    let ok = answers.iter().filter(|r| **r == Response::ok_empty()).count();
    assert_eq!(busy + ok, answers.len(), "{answers:?}");
    assert!(busy > 0, "some AUTH attempts must be turned away");
    assert!(ok > 0, "the verifier still admits some");
    still_serving(&server).await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(tokio::time::timeout(Duration::from_secs(20), h).await.expect("bounded").unwrap());
    }
    out
}
