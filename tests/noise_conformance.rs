//! Our Noise_NK_25519_AESGCM_SHA256 against `snow`, in both roles, plus a
//! known-answer test that pins the exact bytes.

use cryptomem_wire::secure::handshake::PREAMBLE;
use cryptomem_wire::secure::noise::{self, Initiator, TAGLEN, TransportKeys};
use x25519_dalek::{PublicKey, StaticSecret};

const PATTERN: &str = "Noise_NK_25519_AESGCM_SHA256";

fn fixed(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn seal(keys: &mut TransportKeys, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    let tag = keys.send.seal_in_place(&[], &mut buf).unwrap();
    buf.extend_from_slice(&tag);
    buf
}

fn open(keys: &mut TransportKeys, ciphertext: &[u8]) -> Vec<u8> {
    let split = ciphertext.len() - TAGLEN;
    let mut buf = ciphertext[..split].to_vec();
    let tag: [u8; TAGLEN] = ciphertext[split..].try_into().unwrap();
    keys.recv.open_in_place(&[], &mut buf, &tag).unwrap();
    buf
}

#[test]
fn our_initiator_with_snow_responder() {
    let server_secret = fixed(7);
    let server_public = PublicKey::from(&StaticSecret::from(server_secret));
    let mut responder = snow::Builder::new(PATTERN.parse().unwrap())
        .local_private_key(&server_secret)
        .unwrap()
        .prologue(&PREAMBLE)
        .unwrap()
        .build_responder()
        .unwrap();

    let initiator = Initiator::new(server_public, &PREAMBLE, noise::random_secret().unwrap());
    let (msg1, awaiting) = initiator.write_message(b"hello").unwrap();
    let mut payload = [0u8; 1024];
    let n = responder.read_message(&msg1, &mut payload).unwrap();
    assert_eq!(&payload[..n], b"hello");

    let mut msg2 = [0u8; 1024];
    let n = responder.write_message(b"world", &mut msg2).unwrap();
    let (payload2, mut ours) = awaiting.read_message(&msg2[..n]).unwrap();
    assert_eq!(payload2, b"world");

    let mut theirs = responder.into_transport_mode().unwrap();
    for i in 0..3u8 {
        let ct = seal(&mut ours, &[i; 100]);
        let mut out = [0u8; 200];
        let n = theirs.read_message(&ct, &mut out).unwrap();
        assert_eq!(&out[..n], &[i; 100]);

        let n = theirs.write_message(&[i + 10; 50], &mut out).unwrap();
        assert_eq!(open(&mut ours, &out[..n]), vec![i + 10; 50]);
    }
}

#[test]
fn snow_initiator_with_our_responder() {
    let server = StaticSecret::from(fixed(9));
    let server_public = PublicKey::from(&server);
    let mut initiator = snow::Builder::new(PATTERN.parse().unwrap())
        .remote_public_key(server_public.as_bytes())
        .unwrap()
        .prologue(&PREAMBLE)
        .unwrap()
        .build_initiator()
        .unwrap();

    let mut msg1 = [0u8; 1024];
    let n = initiator.write_message(&[], &mut msg1).unwrap();
    let (payload, ready) = noise::responder_read_message(&server, &PREAMBLE, &msg1[..n]).unwrap();
    assert!(payload.is_empty());
    let (msg2, mut ours) = ready.write_message(b"payload", noise::random_secret().unwrap()).unwrap();
    let mut out = [0u8; 1024];
    let n = initiator.read_message(&msg2, &mut out).unwrap();
    assert_eq!(&out[..n], b"payload");
    assert_eq!(ours.handshake_hash.as_slice(), initiator.get_handshake_hash());

    let mut theirs = initiator.into_transport_mode().unwrap();
    let n = theirs.write_message(b"GET k", &mut out).unwrap();
    assert_eq!(open(&mut ours, &out[..n]), b"GET k");
    let ct = seal(&mut ours, b"OK v");
    let n = theirs.read_message(&ct, &mut out).unwrap();
    assert_eq!(&out[..n], b"OK v");
}

#[test]
fn a_client_pinning_another_key_fails_at_the_server() {
    let server = StaticSecret::from(fixed(1));
    let wrong = PublicKey::from(&StaticSecret::from(fixed(2)));
    let (msg1, _) = Initiator::new(wrong, &PREAMBLE, noise::random_secret().unwrap()).write_message(&[]).unwrap();
    assert!(noise::responder_read_message(&server, &PREAMBLE, &msg1).is_err());
}

#[test]
fn a_different_prologue_fails_the_handshake() {
    let server = StaticSecret::from(fixed(1));
    let public = PublicKey::from(&server);
    let (msg1, _) =
        Initiator::new(public, b"CMEM\x02\x00\x00\x00", noise::random_secret().unwrap()).write_message(&[]).unwrap();
    assert!(noise::responder_read_message(&server, &PREAMBLE, &msg1).is_err());
}

/// Fixed static and ephemeral keys give fixed bytes. The expected hex was produced
/// by this implementation and is cross-checked against snow in the same test, so
/// a change to either side's output fails here.
#[test]
fn known_answer() {
    let server_secret = fixed(0x11);
    let client_e = fixed(0x22);
    let server_e = fixed(0x33);
    let server = StaticSecret::from(server_secret);
    let server_public = PublicKey::from(&server);

    let (msg1, awaiting) =
        Initiator::new(server_public, &PREAMBLE, StaticSecret::from(client_e)).write_message(&[]).unwrap();
    let (_, ready) = noise::responder_read_message(&server, &PREAMBLE, &msg1).unwrap();
    let (msg2, mut server_keys) = ready.write_message(&[], StaticSecret::from(server_e)).unwrap();
    let (_, mut client_keys) = awaiting.read_message(&msg2).unwrap();
    let record = seal(&mut client_keys, b"CM");
    let reply = seal(&mut server_keys, b"OK");

    // snow, with the same fixed keys, must produce the same bytes.
    let mut snow_i = snow::Builder::new(PATTERN.parse().unwrap())
        .remote_public_key(server_public.as_bytes())
        .unwrap()
        .prologue(&PREAMBLE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&client_e)
        .build_initiator()
        .unwrap();
    let mut snow_r = snow::Builder::new(PATTERN.parse().unwrap())
        .local_private_key(&server_secret)
        .unwrap()
        .prologue(&PREAMBLE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&server_e)
        .build_responder()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut scratch = [0u8; 256];
    let n = snow_i.write_message(&[], &mut buf).unwrap();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&msg1));
    snow_r.read_message(&buf[..n], &mut scratch).unwrap();
    let n = snow_r.write_message(&[], &mut buf).unwrap();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&msg2));
    snow_i.read_message(&buf[..n], &mut scratch).unwrap();
    let mut snow_i = snow_i.into_transport_mode().unwrap();
    let n = snow_i.write_message(b"CM", &mut buf).unwrap();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&record));

    assert_eq!(hex::encode(&msg1), KAT_MSG1);
    assert_eq!(hex::encode(&msg2), KAT_MSG2);
    assert_eq!(hex::encode(&record), KAT_RECORD);
    assert_eq!(hex::encode(&reply), KAT_REPLY);
}

const KAT_MSG1: &str =
    "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f2036aed41049558d87c88b8a3cfe033c0c";
const KAT_MSG2: &str =
    "7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b143709ea2c21278ca51f94edec438723f2";
const KAT_RECORD: &str = "d0b3ddd454ca3b35b254afebbf5deaccd958";
const KAT_REPLY: &str = "e3a4028260023d5df903b24d047d3f67bf26";
