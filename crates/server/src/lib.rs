//! cryptomem: a secure in-memory cache with its own encrypted protocol.
//!
//! Every byte after the handshake is encrypted (Noise NK, then AES-256-GCM
//! records), values are sealed by the client before they leave it, and only
//! holders of a token get in. The `cryptomem` binary runs the server and a
//! redis-cli-style client; this library holds both sides.
//!
//! # Example
//!
//! An embedded server on a loopback port and a client talking to it:
//!
//! ```
//! use cryptomem::auth::HashParams;
//! use cryptomem::persist::DataDir;
//! use cryptomem::server::{Server, ServerConfig};
//! use cryptomem::value_crypto::{Keyring, ValueKey};
//! use cryptomem::{Client, ClientConfig, SetOptions};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (data, init) = DataDir::open_or_init(dir.path(), HashParams::default())?;
//! let token = init.expect("a new data dir issues an admin token").admin_token;
//! let config = ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
//! let server_key = data.identity().public();
//! let server = Server::bind(config, data).await?;
//! let addr = server.local_addr()?;
//! tokio::spawn(server.run(std::future::pending()));
//!
//! let keyring = Keyring::new(ValueKey::generate()?);
//! let config = ClientConfig::new(addr.to_string(), server_key, token).with_keyring(keyring);
//! let client = Client::connect(config).await?;
//! client.set("greeting", b"hello").await?;
//! assert_eq!(client.get("greeting").await?, Some(b"hello".to_vec()));
//! assert!(!client.set_with("greeting", b"again", SetOptions::default().only_if_absent()).await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`secure`] | the Noise NK handshake, the record layer, the server's key pair |
//! | [`protocol`] | request/response encoding and decoding; no I/O |
//! | [`value_crypto`] | client-side sealing of values, value keys and passphrases |
//! | [`store`] | the sharded keyspace: `ArcSwap`-published persistent hash tries, expiry |
//! | [`auth`] | tokens, their argon2id hashes, verification |
//! | [`persist`] | the data directory and atomic file writes |
//! | [`server`] | configuration, listener, sessions, dispatch, INFO |
//! | [`client`] | the async client and the credentials file |
//! | [`units`] | `10s` / `16MiB` parsing for flags and config files |
//!
//! The `cryptomem` binary's own code (serve, keygen, client commands) is in
//! `src/cli`; `tools/` is the `cryptomem-tool` package.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod client;
mod periodic;
pub mod persist;
pub mod protocol;
pub mod secure;
pub mod server;
pub mod store;
pub mod units;
pub mod value_crypto;

pub use client::{Client, ClientConfig, KeyTtl, SetOptions};

/// An error and its causes for a person to read, each cause once: our error
/// messages already include their cause's text, which printing the whole
/// chain (anyhow's `{:#}`) would repeat.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_text_prints_each_cause_once() {
        let io = std::io::Error::other("No space left on device");
        let persist = crate::persist::PersistError::Io { file: "/data/log-5.cml".into(), source: io };
        let top = crate::server::ServerError::Persist(persist);
        assert_eq!(super::error_text(&top), "cannot recover the data dir: /data/log-5.cml: No space left on device");
        let wrapped = anyhow::Error::new(std::io::Error::other("inner")).context("outer");
        assert_eq!(super::error_text(wrapped.as_ref()), "outer: inner");
    }
}
