//! `--metrics-listen`: the Prometheus endpoint as a scraper sees it.

mod common;

use std::time::Duration;

use common::TestServer;
use cryptomem_client::{Client, Error, Role, SetOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample `name{labels}` (labels in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let wanted = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && wanted && rest.matches('=').count() == labels.len()).then(|| value.parse().ok())?
    })
}

/// Every line of the body is a `# HELP`/`# TYPE` comment, blank, or a
/// sample `name{label="value",...} number`, as the text format requires.
fn assert_prometheus_text(response: &str) {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut samples = 0;
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "{line}");
            assert!(name_ok(parts.next().unwrap_or_default()), "{line}");
            if kind == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary"].contains(&parts.next().unwrap_or_default()),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "{line}");
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(key) && !quoted.contains('\n'), "{line}");
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "{line}");
        samples += 1;
    }
    assert!(samples > 50, "{samples} samples");
}

#[tokio::test]
async fn the_endpoint_counts_commands_auth_and_state_without_names() {
    let metrics_addr = free_port();
    let server = TestServer::start_with(|c| c.metrics_listen = Some(metrics_addr)).await;
    let client = server.client().await;
    client.set("user:secret-name", b"v").await.unwrap();
    assert!(client.get("user:secret-name").await.unwrap().is_some());
    assert!(client.get("user:absent").await.unwrap().is_none());
    let conflict = client.set_if_version("user:secret-name", b"w", 999_999, SetOptions::default()).await;
    assert!(matches!(conflict, Err(Error::Conflict(_))), "{conflict:?}");
    let reader = client.token_add(Role::Read, vec![], "metrics test").await.unwrap();
    let mut as_reader = server.config();
    as_reader.token = reader.clone();
    let read_only = Client::connect(as_reader).await.unwrap();
    assert!(read_only.set("user:x", b"1").await.is_err(), "NOPERM");
    let mut wrong = server.config();
    wrong.token = cryptomem_client::Token::generate().unwrap();
    assert!(matches!(Client::connect(wrong).await, Err(Error::Auth(_))));

    // Sampled figures are copied once a second.
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(metrics_addr).await;
        if sample(&text, "cryptomem_keys", &[]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_prometheus_text(&text);
    let get = |name, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(get("cryptomem_keys", &[]), Some(1.0), "{text}");
    assert_eq!(get("cryptomem_commands_total", &[("command", "SET"), ("outcome", "ok")]), Some(1.0));
    assert_eq!(get("cryptomem_commands_total", &[("command", "SET"), ("outcome", "error")]), Some(1.0));
    assert_eq!(get("cryptomem_commands_total", &[("command", "GET"), ("outcome", "ok")]), Some(1.0));
    assert_eq!(get("cryptomem_commands_total", &[("command", "GET"), ("outcome", "not_found")]), Some(1.0));
    assert_eq!(get("cryptomem_command_errors_total", &[("command", "SETV"), ("code", "CONFLICT")]), Some(1.0));
    assert_eq!(get("cryptomem_command_errors_total", &[("command", "SET"), ("code", "NOPERM")]), Some(1.0));
    assert_eq!(get("cryptomem_command_duration_seconds_count", &[("command", "GET")]), Some(2.0));
    assert_eq!(get("cryptomem_command_duration_seconds_bucket", &[("command", "GET"), ("le", "+Inf")]), Some(2.0));
    assert_eq!(get("cryptomem_auth_total", &[("outcome", "invalid_token")]), Some(1.0));
    assert!(get("cryptomem_auth_total", &[("outcome", "ok")]).unwrap() >= 2.0);
    assert!(get("cryptomem_connections_open", &[]).unwrap() >= 2.0);
    assert!(get("cryptomem_log_written_bytes_total", &[]).unwrap() > 0.0);
    assert!(get("cryptomem_memory_used_bytes", &[]).unwrap() > 0.0);
    assert!(get("cryptomem_keyspace_misses_total", &[]).unwrap() >= 1.0);
    assert_eq!(get("cryptomem_persistence_errors_total", &[("kind", "log")]), Some(0.0));
    assert_eq!(get("cryptomem_active_defrag_hits_total", &[]), Some(0.0), "registered, no pass yet");
    assert!(text.contains("# HELP cryptomem_commands_total"), "{text}");

    client.save().await.unwrap();
    let mut snapshot_seen = false;
    for _ in 0..50 {
        text = scrape(metrics_addr).await;
        if sample(&text, "cryptomem_snapshots_total", &[]) == Some(1.0) {
            snapshot_seen = sample(&text, "cryptomem_snapshot_age_seconds", &[]).is_some();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snapshot_seen, "{text}");

    for secret in ["secret-name", "user:", reader.id(), server.token.id(), "127.0.0.1"] {
        assert!(!text.contains(secret), "`{secret}` in the metrics");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_metrics_address_in_use_stops_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = cryptomem_server::server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        metrics_listen: Some(addr),
        ..Default::default()
    };
    let (data, _) = cryptomem_server::server::DataDir::open_or_init(
        &config.data_dir,
        cryptomem_server::auth::HashParams::default(),
    )
    .unwrap();
    let err = cryptomem_server::server::Server::bind(config, data).await.unwrap_err().to_string();
    assert!(err.contains("metrics") && err.contains(&addr.to_string()), "{err}");
}
