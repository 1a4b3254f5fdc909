//! The cryptomem server as a library: what the `cryptomem` binary's `serve`
//! and `cryptomem-tool` run, and what a program embedding a server uses.
//!
//! # Example
//!
//! An embedded server on a loopback port and a client talking to it:
//!
//! ```
//! use cryptomem_server::auth::HashParams;
//! use cryptomem_server::server::DataDir;
//! use cryptomem_server::server::{Server, ServerConfig};
//! use cryptomem_client::value_crypto::{Keyring, ValueKey};
//! use cryptomem_client::{Client, ClientConfig, SetOptions};
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
//! | [`store`] | the sharded keyspace: `ArcSwap`-published persistent hash tries, expiry |
//! | [`auth`] | token hashes (argon2id), verification, roles' permissions, brute-force throttling |
//! | [`persist`] | the append-only log, snapshots, recovery |
//! | [`server`] | configuration, the data directory and first-start initialisation, listener, sessions, dispatch, INFO |
//!
//! Dependencies point one way: `server` uses the others; `persist` uses
//! `store` (through [`store::Journal`] and [`store::Change`]); `auth` and
//! `store` use only the wire and util crates.
//!
//! The wire format (handshake, records, requests) is the `cryptomem-wire`
//! crate, re-exported here as [`protocol`] and [`secure`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
mod periodic;
pub mod persist;
pub mod server;
pub mod store;

pub use cryptomem_util::units;
pub use cryptomem_wire::{protocol, secure};
