//! `bench-auth` runs against a live server and reports a non-zero rate.

use std::process::Command;

use cryptomem::auth::HashParams;
use cryptomem::client::Credentials;
use cryptomem::persist::DataDir;
use cryptomem::server::{Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_auth_reports_a_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, report) = DataDir::open_or_init(tmp.path(), HashParams::default()).unwrap();
    let public = data.identity().public();
    let config =
        ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: tmp.path().into(), ..ServerConfig::default() };
    let server = Server::bind(config, data).await.unwrap();
    let addr = server.local_addr().unwrap();
    let creds = Credentials { server: addr.to_string(), server_public_key: public, token: report.unwrap().admin_token };
    let creds_path = tmp.path().join("bench-credentials.toml");
    creds.save(&creds_path).unwrap();
    tokio::spawn(server.run(std::future::pending()));

    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cryptomem-tool"))
            .args(["bench-auth", "-c", "2", "--duration", "1s", "--credentials"])
            .arg(&creds_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let rate: f64 =
        text.split(": ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|r| r.parse().ok()).unwrap();
    assert!(rate > 0.0, "{text}");
    assert!(text.contains("0 errors"), "{text}");
}
