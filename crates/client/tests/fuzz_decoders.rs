//! Every decoder the client runs on bytes it did not make, fed arbitrary
//! bytes and mutated valid inputs: sealed values from the server, value key
//! files, salt files, credentials files and TOKEN LIST bodies. An error or
//! the exact original, never a panic, and no error message repeats a
//! secret.
//!
//! 2,000 cases per property by default; `PROPTEST_CASES=1000000 cargo test
//! --release -p cryptomem-client --test fuzz_decoders` is the long run.

use proptest::prelude::*;

use cryptomem_testkit::{cases, mutate, mutations};

use cryptomem_client::Credentials;
use cryptomem_client::value_crypto::{Keyring, ValueKey, generate_salt, parse_salt_file, salt_file_text};
use cryptomem_wire::secure::noise::random_secret;
use cryptomem_wire::{Token, TokenInfo};

/// Every allocation in this binary counts against a 64 MiB cap on live
/// bytes (all properties together): a decoder that sized a buffer from a
/// length in its input, beyond the limits it was given, would hit the cap
/// and abort the run instead of passing by luck on a big machine.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 64 << 20);

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn sealed_values_open_only_unchanged(
        plain in proptest::collection::vec(any::<u8>(), 0..200),
        m in mutations(),
        junk in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let keyring = Keyring::new(ValueKey::from_bytes([7; 32]));
        let sealed = keyring.seal(b"key", &plain).unwrap();
        let damaged = mutate(sealed.clone(), &m);
        match keyring.open(b"key", &damaged) {
            Ok(opened) => {
                prop_assert_eq!(&damaged, &sealed, "a damaged value opened");
                prop_assert_eq!(opened, plain);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        prop_assert!(keyring.open(b"other key", &sealed).is_err(), "opened under another key name");
        prop_assert!(keyring.open(b"key", &junk).is_err());
    }

    #[test]
    fn key_and_salt_files_parse_or_fail_cleanly(m in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..100)) {
        let key = ValueKey::from_bytes([9; 32]);
        let file = key.to_key_file();
        let _ = ValueKey::from_key_file(&junk);
        let _ = ValueKey::from_key_file(&mutate(file.as_bytes().to_vec(), &m));
        let salt = generate_salt().unwrap();
        let text = salt_file_text(&salt);
        let _ = parse_salt_file(&String::from_utf8_lossy(&junk));
        let _ = parse_salt_file(&String::from_utf8_lossy(&mutate(text.into_bytes(), &m)));
    }

    #[test]
    fn credentials_files_load_or_fail_without_the_token(m in mutations(), junk in proptest::collection::vec(any::<u8>(), 0..300)) {
        let token = Token::generate().unwrap();
        let secret = token.secret().to_string();
        let creds = Credentials {
            server: "127.0.0.1:7379".into(),
            server_public_key: x25519_dalek::PublicKey::from(&random_secret().unwrap()),
            token,
            previous_server_public_keys: vec![x25519_dalek::PublicKey::from(&random_secret().unwrap())],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.toml");
        creds.save(&path).unwrap();
        let valid = std::fs::read(&path).unwrap();
        for bytes in [mutate(valid, &m), junk.clone()] {
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = Credentials::load(&path) {
                let message = e.to_string();
                // No run of the secret long enough to help a guess.
                for window in secret.as_bytes().windows(8) {
                    prop_assert!(!message.contains(std::str::from_utf8(window).unwrap()), "{message}");
                }
            }
        }
    }

    #[test]
    fn token_listings_parse_or_fail_cleanly(m in mutations(), text in ".{0,200}") {
        #[derive(serde::Serialize)]
        struct Listing {
            token: Vec<TokenInfo>,
        }
        let info = TokenInfo {
            id: "0123456789ab".into(),
            role: cryptomem_client::Role::Read,
            prefixes: vec!["a:".into()],
            label: "l".into(),
            created_unix_ms: 5,
        };
        let valid = toml::to_string(&Listing { token: vec![info] }).unwrap();
        let _ = toml::from_str::<cryptomem_wire::TokenListing>(&text);
        let damaged = String::from_utf8_lossy(&mutate(valid.into_bytes(), &m)).into_owned();
        let _ = toml::from_str::<cryptomem_wire::TokenListing>(&damaged);
    }
}
