//! A live server for the tool's load tests, and running the tool binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptomem_client::Credentials;
use cryptomem_server::auth::HashParams;
use cryptomem_server::server::DataDir;
use cryptomem_server::server::{Server, ServerConfig};

/// Starts a server on 127.0.0.1 port 0 in `tmp` (after `adjust` changes
/// its configuration) and writes a credentials file for it; returns its path.
pub async fn serve(tmp: &Path, adjust: impl FnOnce(&mut ServerConfig)) -> PathBuf {
    let (data, report) = DataDir::open_or_init(tmp, HashParams::default()).unwrap();
    let public = data.identity().public();
    let mut config =
        ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: tmp.into(), ..ServerConfig::default() };
    adjust(&mut config);
    let server = Server::bind(config, data).await.unwrap();
    let addr = server.local_addr().unwrap();
    let creds = Credentials {
        server: addr.to_string(),
        server_public_key: public,
        token: report.unwrap().admin_token,
        previous_server_public_keys: Vec::new(),
    };
    let creds_path = tmp.join("tool-credentials.toml");
    creds.save(&creds_path).unwrap();
    tokio::spawn(server.run(std::future::pending()));
    creds_path
}

/// Runs `cryptomem-tool` with `args` off the async threads.
pub async fn run_tool(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_cryptomem-tool")).args(args).output().unwrap())
        .await
        .unwrap()
}
