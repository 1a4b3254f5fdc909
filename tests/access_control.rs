//! Roles, prefixes, live token management and brute-force throttling.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RawConn, TestServer, assert_error};
use cryptomem_client::Error;
use cryptomem_client::{Client, ClientConfig, SetOptions};
use cryptomem_server::auth::{Role, Token, TokenTable};
use cryptomem_wire::protocol::Request;

async fn as_token(server: &TestServer, token: Token) -> Result<Client, Error> {
    let mut config = server.config();
    config.token = token;
    Client::connect(config).await
}

fn code(err: &Error) -> &str {
    match err {
        Error::Server { code, .. } => code,
        Error::Auth(msg) => msg.split_whitespace().next().unwrap_or_default(),
        _ => "",
    }
}

fn info_value(info: &str, field: &str) -> u64 {
    common::info_field(info, field).parse().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn each_role_is_allowed_and_refused_where_it_should_be() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin.set("k", b"v").await.unwrap();
    let reader = as_token(&server, admin.token_add(Role::Read, vec![], "reader").await.unwrap()).await.unwrap();
    let writer = as_token(&server, admin.token_add(Role::Write, vec![], "writer").await.unwrap()).await.unwrap();

    assert_eq!(reader.get("k").await.unwrap().unwrap(), b"v");
    assert!(reader.exists("k").await.unwrap());
    reader.ttl("k").await.unwrap();
    reader.mget(&["k"]).await.unwrap();
    reader.dbsize().await.unwrap();
    for err in [
        reader.set("k", b"x").await.unwrap_err(),
        reader.delete("k").await.unwrap_err(),
        reader.expire("k", Duration::from_secs(5)).await.unwrap_err(),
        reader.persist("k").await.unwrap_err(),
        reader.mset(&[("a", "b")], None).await.unwrap_err(),
        reader.save().await.unwrap_err(),
        reader.token_list().await.unwrap_err(),
    ] {
        assert_eq!(code(&err), "NOPERM", "{err}");
    }
    assert_eq!(reader.get("k").await.unwrap().unwrap(), b"v", "the connection stays usable after NOPERM");

    writer.set("k", b"w").await.unwrap();
    writer.set_with("k2", b"w", SetOptions::ttl(Duration::from_secs(9))).await.unwrap();
    writer.delete("k2").await.unwrap();
    assert_eq!(code(&writer.save().await.unwrap_err()), "NOPERM");
    assert_eq!(code(&writer.token_add(Role::Admin, vec![], "escalate").await.unwrap_err()), "NOPERM");
    assert_eq!(code(&writer.token_revoke(server.token.id()).await.unwrap_err()), "NOPERM");

    admin.save().await.unwrap();
    let listed = admin.token_list().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().any(|t| t.role == Role::Read && t.label == "reader"));
}

#[tokio::test]
async fn prefixes_limit_single_and_multi_key_commands() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    admin.set("app2:secret", b"theirs").await.unwrap();
    let token = admin.token_add(Role::Write, vec!["app1:".into(), "shared:".into()], "billing").await.unwrap();
    let app1 = as_token(&server, token).await.unwrap();

    app1.set("app1:x", b"1").await.unwrap();
    app1.set("shared:y", b"2").await.unwrap();
    assert_eq!(app1.get("app1:x").await.unwrap().unwrap(), b"1");
    for err in [
        app1.get("app2:secret").await.unwrap_err(),
        app1.set("app2:x", b"no").await.unwrap_err(),
        app1.delete("app2:secret").await.unwrap_err(),
        app1.mget(&["app1:x", "app2:secret"]).await.unwrap_err(),
        app1.mset(&[("app1:a", "ok"), ("other", "no")], None).await.unwrap_err(),
    ] {
        assert_eq!(code(&err), "NOPERM", "{err}");
    }
    assert_eq!(admin.get("app1:a").await.unwrap(), None, "a refused MSET writes nothing");
    assert_eq!(admin.get("app2:secret").await.unwrap().unwrap(), b"theirs");
    assert_eq!(app1.mget(&["app1:x", "shared:y"]).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_revoked_while_connected_fails_its_next_request() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    let token = admin.token_add(Role::Write, vec![], "temp").await.unwrap();
    let mut raw = RawConn::handshaken(&server).await;
    let r = raw.call(&Request::Auth { token: Bytes::from(token.expose().to_string()) }).await.unwrap();
    assert_eq!(r, cryptomem_wire::protocol::Response::ok_empty());
    assert!(raw.call(&Request::DbSize).await.unwrap().error_parts().is_none());

    assert!(admin.token_revoke(token.id()).await.unwrap());
    assert!(!admin.token_revoke(token.id()).await.unwrap(), "revoking twice finds nothing");
    assert_error(raw.call(&Request::DbSize).await, "NOAUTH");
    raw.assert_closed().await;
    let err = as_token(&server, token).await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err}");
    admin.ping().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_gets_the_same_answer_and_cost_whether_the_id_exists_or_not() {
    let server = TestServer::start_with(|c| c.auth.throttle.failure_delay = Duration::ZERO).await;
    let admin = server.client().await;
    let before = info_value(&admin.info().await.unwrap(), "argon2_verifications");
    let known_id = format!("cmt_{}_{}", server.token.id(), "0".repeat(64));
    let unknown_id = Token::generate().unwrap().expose().to_string();
    let mut answers = Vec::new();
    for token in [known_id, unknown_id] {
        let mut raw = RawConn::handshaken(&server).await;
        answers.push(raw.call(&Request::Auth { token: Bytes::from(token) }).await.unwrap());
        raw.assert_closed().await;
    }
    assert_eq!(answers[0], answers[1], "identical replies");
    assert_eq!(answers[0].error_parts().unwrap(), ("WRONGPASS".into(), "invalid token".into()));
    let after = info_value(&admin.info().await.unwrap(), "argon2_verifications");
    assert_eq!(after - before, 2, "one argon2 run each, known id or not");
}

#[tokio::test]
async fn repeated_failures_lock_the_address_out_until_the_back_off_ends() {
    let server = TestServer::start_with(|c| {
        c.auth.throttle.max_failures = 3;
        c.auth.throttle.lockout = Duration::from_secs(60);
        c.auth.throttle.failure_delay = Duration::from_millis(10);
    })
    .await;
    let forged = Token::generate().unwrap();
    for _ in 0..3 {
        let err = as_token(&server, forged.clone()).await.unwrap_err();
        assert!(err.to_string().contains("WRONGPASS"), "{err}");
    }
    // Even the right token is refused from a locked-out address.
    let err = as_token(&server, server.token.clone()).await.unwrap_err();
    assert!(err.to_string().contains("LOCKED") && err.to_string().contains("retry in"), "{err}");
    server.clock.advance(Duration::from_secs(61));
    let admin = server.client().await;
    let info = admin.info().await.unwrap();
    assert_eq!(info_value(&info, "auth_lockouts"), 1);
    assert_eq!(info_value(&info, "auth_refused_locked"), 1);
    assert_eq!(info_value(&info, "auth_failures"), 3);
}

#[tokio::test]
async fn reconnects_skip_argon2_once_a_token_verified() {
    let server = TestServer::start().await;
    let admin = server.client().await;
    let before = admin.info().await.unwrap();
    for _ in 0..3 {
        server.client().await.ping().await.unwrap();
    }
    let after = admin.info().await.unwrap();
    assert_eq!(info_value(&after, "argon2_verifications"), info_value(&before, "argon2_verifications"));
    assert_eq!(info_value(&after, "auth_cache_hits") - info_value(&before, "auth_cache_hits"), 3);

    let uncached = TestServer::start_with(|c| c.auth.cache = false).await;
    let admin = uncached.client().await;
    let before = info_value(&admin.info().await.unwrap(), "argon2_verifications");
    uncached.client().await.ping().await.unwrap();
    assert_eq!(info_value(&admin.info().await.unwrap(), "argon2_verifications") - before, 1);
}

#[tokio::test]
async fn offline_edits_of_the_token_file_apply_without_a_restart() {
    let server = TestServer::start().await;
    let path = server.data_dir.join("tokens.toml");
    let token = Token::generate().unwrap();
    let record =
        cryptomem_server::auth::new_record(&token, Role::Read, vec![], "offline".into(), Default::default(), 0)
            .await
            .unwrap();
    let mut table = TokenTable::load(&path).unwrap();
    table.insert(record);
    table.save(&path).unwrap();
    let mut client = None;
    for _ in 0..50 {
        if let Ok(c) = as_token(&server, token.clone()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.expect("the new token works within a few seconds");
    client.dbsize().await.unwrap();

    let mut table = TokenTable::load(&path).unwrap();
    assert!(table.remove(token.id()));
    table.save(&path).unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if client.dbsize().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "an offline revoke reaches open connections");
}

/// Regression: 50 wrong tokens sent at once on 50 connections were all
/// verified; an attempt now counts against the budget when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_cannot_outrun_the_lockout() {
    let server = TestServer::start_with(|c| {
        c.auth.throttle.max_failures = 10;
        c.auth.throttle.lockout = Duration::from_secs(60);
    })
    .await;
    let guesses: Vec<_> = (0..50)
        .map(|_| {
            let config = ClientConfig::new(server.addr.to_string(), server.public_key, Token::generate().unwrap());
            tokio::spawn(async move { Client::connect(config).await.map(|_| ()).unwrap_err().to_string() })
        })
        .collect();
    let mut wrongpass = 0;
    let mut locked = 0;
    for guess in guesses {
        let err = guess.await.unwrap();
        if err.contains("WRONGPASS") {
            wrongpass += 1;
        } else if err.contains("LOCKED") {
            locked += 1;
        }
    }
    assert!(wrongpass <= 10, "{wrongpass} guesses were verified");
    assert_eq!(wrongpass + locked, 50);
    server.clock.advance(Duration::from_secs(61));
    let info = server.client().await.info().await.unwrap();
    assert!(info_value(&info, "argon2_verifications") <= 11, "10 guesses and the admin's own AUTH at most");
}
