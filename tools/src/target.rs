//! Which cryptomem server `bench` and `replay` load, and how their clients
//! connect to it.

use std::path::PathBuf;

use anyhow::Context;
use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, ClientConfig, Credentials};

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Credentials file (server, public key, token).
    #[arg(long, default_value = "data/credentials.toml")]
    pub credentials: PathBuf,
    /// Server address, overriding the credentials file.
    #[arg(long)]
    pub server: Option<String>,
}

impl Target {
    /// The client configuration, one connection per client (so `-c` counts
    /// connections); with `seal`, values are sealed under a fixed key, so
    /// values written by one run open in the next.
    pub fn config(&self, seal: bool) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::from_credentials(Credentials::load(&self.credentials)?).with_connections(1);
        if let Some(server) = &self.server {
            config.server.clone_from(server);
        }
        Ok(if seal { config.with_keyring(Keyring::new(Self::bench_value_key())) } else { config })
    }

    /// The fixed value key benchmarks seal with.
    pub fn bench_value_key() -> ValueKey {
        ValueKey::from_bytes(*b"cryptomem-bench-fixed-value-key!")
    }

    /// One connection with `config`.
    pub async fn connect(config: &ClientConfig) -> anyhow::Result<Client> {
        Client::connect(config.clone()).await.with_context(|| format!("cannot connect to {}", config.server))
    }
}
