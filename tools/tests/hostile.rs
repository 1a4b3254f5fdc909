//! `hostile` against a live server with short deadlines: every hostile
//! connection ends the way the server's rules say, and the honest client
//! never fails.

use std::process::Command;
use std::time::Duration;

use cryptomem_client::Credentials;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_end_by_the_rules_and_the_honest_client_works() {
    let tmp = tempfile::tempdir().unwrap();
    let creds_path = common::serve(tmp.path(), |c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.request_timeout = Some(Duration::from_secs(2));
    })
    .await;

    let args = [
        "hostile",
        "--duration",
        "6s",
        "--baseline",
        "1s",
        "--settle",
        "1s",
        "--idle",
        "300",
        "--slow",
        "10",
        "--garbage",
        "100",
        "--garbage-records",
        "50",
        "--big-values",
        "4",
        "--big-value-size",
        "1MiB",
        "--wrong-auth",
        "100",
        "--json",
        "--credentials",
    ];
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    args.push(creds_path.display().to_string());
    let out = common::run_tool(args).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();

    let outcomes = |kind: &str| -> Vec<(String, u64)> {
        report["attacks"][kind]
            .as_object()
            .unwrap_or_else(|| panic!("no {kind} in {report}"))
            .iter()
            .map(|(label, n)| (label.clone(), n.as_u64().unwrap()))
            .collect()
    };
    let total = |kind: &str| outcomes(kind).iter().map(|(_, n)| n).sum::<u64>();
    for (kind, count) in
        [("idle", 300), ("slow", 10), ("garbage", 100), ("garbage-records", 50), ("big-value", 4), ("wrong-auth", 100)]
    {
        assert_eq!(total(kind), count, "{kind}: {report}");
    }
    // The handshake deadline (1 s) ends idle and slow openings.
    assert_eq!(outcomes("idle"), vec![("closed by server".to_string(), 300)], "{report}");
    assert_eq!(outcomes("slow"), vec![("closed by server".to_string(), 10)], "{report}");
    for (label, _) in outcomes("garbage") {
        assert!(label == "rejected: unsupported preamble" || label == "closed by server", "{label}: {report}");
    }
    for (label, _) in outcomes("garbage-records") {
        assert!(label == "closed by server" || label == "answered PROTO, closed", "{label}: {report}");
    }
    // The request deadline (2 s) ends the trickled values.
    assert_eq!(outcomes("big-value"), vec![("answered TIMEOUT, closed".to_string(), 4)], "{report}");
    for (label, _) in outcomes("wrong-auth") {
        assert!(label == "answered WRONGPASS, closed" || label == "answered LOCKED, closed", "{label}: {report}");
    }
    assert!(outcomes("wrong-auth").iter().any(|(l, _)| l.contains("LOCKED")), "the lockout engaged: {report}");

    assert_eq!(report["server_alive"], true);
    assert_eq!(report["server_pid"], std::process::id(), "found by its listening port");
    assert!(report["rss_kib_peak"].as_u64().unwrap() >= report["rss_kib_before"].as_u64().unwrap());
    for phase in ["baseline", "honest"] {
        assert_eq!(report[phase]["errors"], 0, "{report}");
        assert_eq!(report[phase]["fresh_connection_failures"], 0, "{report}");
        assert!(report[phase]["requests"].as_u64().unwrap() > 0, "{report}");
    }
}

#[test]
fn only_loopback_servers_are_attacked() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = Credentials {
        server: "192.0.2.1:7379".into(),
        server_public_key: cryptomem_wire::secure::ServerIdentity::generate().unwrap().public(),
        token: cryptomem_wire::Token::generate().unwrap(),
        previous_server_public_keys: Vec::new(),
    };
    let path = tmp.path().join("c.toml");
    creds.save(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cryptomem-tool"))
        .args(["hostile", "--duration", "1s", "--credentials"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"), "{out:?}");
}
