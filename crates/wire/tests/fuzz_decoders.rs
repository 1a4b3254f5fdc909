//! Every decoder of bytes from the network, fed arbitrary bytes and mutated
//! valid inputs: an error (or a clean "need more bytes"), never a panic.
//! Requests, responses and MGET bodies are covered the same way in
//! `protocol/tests.rs`, records in `secure/record.rs`; this file adds the
//! handshake (both sides), tokens, server keys and mutated valid requests.
//!
//! 2,000 cases per property by default; `PROPTEST_CASES=1000000 cargo test
//! --release -p cryptomem-wire --test fuzz_decoders` is the long run.

use bytes::BytesMut;
use proptest::prelude::*;

use cryptomem_testkit::{cases, mutate, mutations};
use cryptomem_wire::Token;
use cryptomem_wire::protocol::{Limits, Request, decode_request, encode_request};
use cryptomem_wire::secure::handshake::{MAX_HANDSHAKE_MESSAGE, PREAMBLE};
use cryptomem_wire::secure::noise::{self, Initiator};
use cryptomem_wire::secure::{client_handshake, parse_public_key, server_handshake};

/// Every allocation in this binary counts against a 64 MiB cap on live
/// bytes (all properties together): a decoder that sized a buffer from a
/// length in its input, beyond the limits it was given, would hit the cap
/// and abort the run instead of passing by luck on a big machine.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 64 << 20);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Runs the server's side of the handshake on `input` as the whole of what
/// a client sent.
fn server_reads(input: &[u8]) -> bool {
    let identity = noise::random_secret().unwrap();
    let mut stream = tokio::io::join(input, tokio::io::sink());
    block_on(server_handshake(&mut stream, std::slice::from_ref(&identity))).is_ok()
}

/// A valid client opening for `server`: preamble, length, message 1.
fn client_opening(server: &x25519_dalek::StaticSecret) -> Vec<u8> {
    let public = x25519_dalek::PublicKey::from(server);
    let (msg1, _) = Initiator::new(public, &PREAMBLE, noise::random_secret().unwrap()).write_message(&[]).unwrap();
    let mut out = PREAMBLE.to_vec();
    out.extend_from_slice(&u16::try_from(msg1.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&msg1);
    out
}

/// A valid request per command, for mutation.
fn request_bytes(which: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let key = bytes::Bytes::copy_from_slice(key);
    let value = bytes::Bytes::copy_from_slice(value);
    let req = match which % 5 {
        0 => Request::Get { key },
        1 => Request::Set { key, value, ttl: None, condition: cryptomem_wire::protocol::SetCondition::Always },
        2 => Request::MGet { keys: vec![key.clone(), key] },
        3 => Request::MSet { pairs: vec![(key, value)], ttl: Some(std::time::Duration::from_secs(5)) },
        _ => Request::Delete { key },
    };
    let mut buf = Vec::new();
    encode_request(&req, &mut buf).unwrap();
    buf
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn the_server_handshake_refuses_arbitrary_openings(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut input = PREAMBLE.to_vec();
        input.extend_from_slice(&data);
        prop_assert!(!server_reads(&input));
        prop_assert!(!server_reads(&data));
    }

    #[test]
    fn the_server_handshake_refuses_mutated_openings(m in mutations()) {
        let server = noise::random_secret().unwrap();
        let valid = client_opening(&server);
        let damaged = mutate(valid.clone(), &m);
        let mut stream = tokio::io::join(&damaged[..], tokio::io::sink());
        // Two accepted keys, as during a rotation's grace period: the valid
        // opening is for the second, so the first is tried and fails first.
        let accepted = [noise::random_secret().unwrap(), server];
        let result = block_on(server_handshake(&mut stream, &accepted));
        // Damage past the end of message 1 (an insertion after it) is not
        // part of the handshake; anything else must be refused.
        prop_assert!(result.is_err() || damaged.starts_with(&valid), "accepted {damaged:?}");
    }

    #[test]
    fn the_client_handshake_refuses_arbitrary_replies(
        len in prop_oneof![Just(0u16), 1u16..64, Just(MAX_HANDSHAKE_MESSAGE as u16 + 1), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let server = noise::random_secret().unwrap();
        let key = x25519_dalek::PublicKey::from(&server);
        let mut reply = len.to_be_bytes().to_vec();
        reply.extend_from_slice(&body);
        let mut stream = tokio::io::join(&reply[..], tokio::io::sink());
        prop_assert!(block_on(client_handshake(&mut stream, &key)).is_err());
    }

    #[test]
    fn mutated_requests_decode_or_fail_cleanly(
        which in any::<u8>(),
        key in proptest::collection::vec(any::<u8>(), 1..20),
        value in proptest::collection::vec(any::<u8>(), 0..60),
        m in mutations(),
    ) {
        let damaged = mutate(request_bytes(which, &key, &value), &m);
        let limits = Limits { max_key_len: 32, max_value_len: 64, max_batch_keys: 4 };
        let mut buf = BytesMut::from(&damaged[..]);
        let before = buf.len();
        while let Ok(Some(_)) = decode_request(&mut buf, &limits) {
            prop_assert!(buf.len() < before, "a decoded request consumed bytes");
        }
    }

    #[test]
    fn tokens_and_server_keys_parse_or_fail_cleanly(text in ".{0,120}", m in mutations()) {
        let _ = Token::parse(&text);
        let _ = parse_public_key(&text);
        let valid = Token::generate().unwrap().expose().to_string();
        let damaged = String::from_utf8_lossy(&mutate(valid.clone().into_bytes(), &m)).into_owned();
        if let Ok(t) = Token::parse(&damaged) {
            // A damaged token may still be well-formed; it then is what it says.
            let exposed = t.expose();
            prop_assert_eq!(exposed.as_str(), damaged.trim());
        }
        let key = cryptomem_wire::secure::public_key_hex(&x25519_dalek::PublicKey::from(&noise::random_secret().unwrap()));
        let _ = parse_public_key(&String::from_utf8_lossy(&mutate(key.into_bytes(), &m)));
    }
}
