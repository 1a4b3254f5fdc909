//! `Client::pipeline`: many commands in one write, one result per command.

mod common;

use common::TestServer;
use cryptomem_client::SetOptions;
use cryptomem_client::{Error, PipelineReply};

#[tokio::test]
async fn mixed_commands_answer_in_order() {
    let server = TestServer::start().await;
    let c = server.client().await;
    c.set("b", b"old").await.unwrap();
    let mut p = c.pipeline();
    p.set("a", b"1")
        .unwrap()
        .set_with("b", b"never", SetOptions::default().only_if_absent())
        .unwrap()
        .get("a")
        .unwrap()
        .get("missing")
        .unwrap()
        .get_raw("b")
        .unwrap()
        .exists("a")
        .unwrap()
        .delete("b")
        .unwrap()
        .delete("b")
        .unwrap();
    assert_eq!(p.len(), 8);
    let replies: Vec<PipelineReply> = p.execute().await.unwrap().into_iter().map(Result::unwrap).collect();
    let PipelineReply::Raw(Some(sealed_b)) = &replies[4] else { panic!("GET b raw: {:?}", replies[4]) };
    assert_eq!(TestServer::keyring().open(b"b", sealed_b).unwrap(), b"old", "the NX set did not write");
    assert_eq!(
        replies,
        vec![
            PipelineReply::Written(true),
            PipelineReply::Written(false),
            PipelineReply::Value(Some(b"1".to_vec())),
            PipelineReply::Value(None),
            replies[4].clone(),
            PipelineReply::Found(true),
            PipelineReply::Found(true),
            PipelineReply::Found(false),
        ]
    );
    assert_eq!(c.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert!(!c.exists("b").await.unwrap());
}

#[tokio::test]
async fn one_failing_command_does_not_fail_the_others() {
    let server = TestServer::start().await;
    let c = server.client().await;
    // Stored unsealed, so opening it as a sealed value fails.
    c.set_raw_with("plain", b"not sealed".to_vec(), SetOptions::default()).await.unwrap();
    let mut p = c.pipeline();
    p.set("x", b"1").unwrap().get("plain").unwrap().get("x").unwrap();
    let replies = p.execute().await.unwrap();
    assert!(matches!(replies[0], Ok(PipelineReply::Written(true))));
    assert!(matches!(replies[1], Err(Error::ValueCrypto(_))), "{:?}", replies[1]);
    assert!(matches!(&replies[2], Ok(PipelineReply::Value(Some(v))) if v == b"1"));
}

#[tokio::test]
async fn a_large_pipeline_spans_records_and_stays_in_order() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let mut p = c.pipeline();
    for i in 0..3000 {
        p.set(format!("k{i}"), format!("value {i} {}", "x".repeat(i % 97))).unwrap();
    }
    for i in 0..3000 {
        p.get(format!("k{i}")).unwrap();
    }
    let replies = p.execute().await.unwrap();
    assert_eq!(replies.len(), 6000);
    for (i, r) in replies[3000..].iter().enumerate() {
        let expected = format!("value {i} {}", "x".repeat(i % 97)).into_bytes();
        assert!(matches!(r, Ok(PipelineReply::Value(Some(v))) if *v == expected), "GET k{i}: {r:?}");
    }
    assert_eq!(c.dbsize().await.unwrap(), 3000);
}

#[tokio::test]
async fn an_empty_pipeline_needs_no_round_trip() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let p = c.pipeline();
    assert!(p.is_empty());
    assert!(p.execute().await.unwrap().is_empty());
    let (replies, first_at) = c.pipeline().execute_timed().await.unwrap();
    assert!(replies.is_empty() && first_at.is_none());
}

/// `execute_timed` gives the same replies as `execute`, and the instant its
/// first reply was read: after the call began, before it returned.
#[tokio::test]
async fn a_timed_pipeline_says_when_its_first_reply_came() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let mut p = c.pipeline();
    for i in 0..200 {
        p.set(format!("t{i}"), vec![b'x'; 1000]).unwrap().get(format!("t{i}")).unwrap();
    }
    let before = std::time::Instant::now();
    let (replies, first_at) = p.execute_timed().await.unwrap();
    let returned = std::time::Instant::now();
    let first_at = first_at.expect("an answered pipeline has a first reply");
    assert!(before <= first_at && first_at <= returned);
    assert_eq!(replies.len(), 400);
    for pair in replies.chunks(2) {
        assert_eq!(pair[0].as_ref().unwrap(), &PipelineReply::Written(true));
        assert_eq!(pair[1].as_ref().unwrap(), &PipelineReply::Value(Some(vec![b'x'; 1000])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_single_calls_from_many_tasks_share_a_connection() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for round in 0..50 {
                    if t % 2 == 0 {
                        let mut p = c.pipeline();
                        for i in 0..7 {
                            p.set(format!("t{t}-{i}"), format!("{round}-{i}")).unwrap();
                        }
                        p.get(format!("t{t}-3")).unwrap();
                        let replies = p.execute().await.unwrap();
                        let want = format!("{round}-3").into_bytes();
                        assert!(matches!(&replies[7], Ok(PipelineReply::Value(Some(v))) if *v == want));
                    } else {
                        let key = format!("t{t}");
                        c.set(&key, format!("{round}")).await.unwrap();
                        assert_eq!(c.get(&key).await.unwrap(), Some(format!("{round}").into_bytes()));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn without_a_value_key_sealed_commands_are_refused_before_sending() {
    let server = TestServer::start().await;
    let mut config = server.config();
    config.keyring = None;
    let raw = cryptomem_client::Client::connect(config).await.unwrap();
    let mut p = raw.pipeline();
    assert!(matches!(p.set("k", b"v"), Err(Error::NoValueKey)));
    assert!(matches!(p.get("k"), Err(Error::NoValueKey)));
    p.set_raw_with("k", b"v".to_vec(), SetOptions::default()).unwrap();
    p.get_raw("k").unwrap();
    let replies = p.execute().await.unwrap();
    assert!(matches!(&replies[1], Ok(PipelineReply::Raw(Some(v))) if v.as_ref() == b"v"));
}
