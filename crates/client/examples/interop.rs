//! Reads and writes keys with the Rust client, for the Python client's
//! interop tests (`crates/python-client/tests/test_interop.py`).
//!
//! `interop CREDENTIALS VALUE_KEY [--hide-names] COMMAND...` where a command
//! is `set KEY_HEX VALUE_HEX` or `get KEY_HEX` (prints the value's hex, or
//! `missing`). Keys and values are hex so any bytes survive the command line.

use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, ClientConfig, Credentials, HiddenNames};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err(
            "usage: interop CREDENTIALS VALUE_KEY [--hide-names] (set KEY_HEX VALUE_HEX | get KEY_HEX)...".into()
        );
    }
    let (credentials, key_file) = (args.remove(0), args.remove(0));
    let value_key = ValueKey::load(key_file.as_ref())?;
    let mut config = ClientConfig::from_credentials(Credentials::load(credentials.as_ref())?);
    if args.first().is_some_and(|a| a == "--hide-names") {
        args.remove(0);
        config = config.with_hidden_names(HiddenNames::new(&value_key, b':'));
    }
    let client = Client::connect(config.with_keyring(Keyring::new(value_key))).await?;
    let mut args = args.into_iter();
    while let Some(command) = args.next() {
        let key = hex::decode(args.next().ok_or("a command needs a key")?)?;
        match command.as_str() {
            "set" => client.set(&key, hex::decode(args.next().ok_or("set needs a value")?)?).await?,
            "get" => match client.get(&key).await? {
                Some(v) => println!("{}", hex::encode(v)),
                None => println!("missing"),
            },
            other => return Err(format!("unknown command {other}").into()),
        }
    }
    Ok(())
}
