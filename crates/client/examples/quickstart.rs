//! Store and read an encrypted value with the client crate.
//!
//! Start a server first (`cargo run --release -- serve --data ./data`), then:
//!
//! ```sh
//! cargo run -p cryptomem-client --example quickstart
//! ```
//!
//! It reads `data/credentials.toml` (written by the server on first start) and
//! creates a throwaway value key in memory, so the values it writes can only
//! be read back by this run.

use std::time::Duration;

use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, KeyTtl, SetOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let credentials = std::env::var("CRYPTOMEM_CREDENTIALS").unwrap_or_else(|_| "data/credentials.toml".into());
    let keyring = Keyring::new(ValueKey::generate()?);
    let client = Client::from_credentials_file(credentials.as_ref(), Some(keyring)).await?;

    client.set("example:greeting", b"hello, encrypted world").await?;
    let value = client.get("example:greeting").await?.unwrap_or_default();
    println!("GET example:greeting -> {}", String::from_utf8_lossy(&value));

    // What the server holds is ciphertext bound to the key name.
    let stored = client.get_raw("example:greeting").await?.unwrap_or_default();
    println!("the server stores {} opaque bytes for it", stored.len());

    client.set_with("example:session", b"short-lived", SetOptions::ttl(Duration::from_secs(30))).await?;
    if let KeyTtl::ExpiresIn(left) = client.ttl("example:session").await? {
        println!("example:session expires in {left:?}");
    }

    // Clones share one pipelined connection and can be used from many tasks.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.set(format!("example:task{i}"), format!("from task {i}")).await })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!("keys on the server: {}", client.dbsize().await?);
    Ok(())
}
