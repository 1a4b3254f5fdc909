//! Encrypted records: the byte stream after the handshake.
//!
//! Each direction is a sequence of records, each one a Noise transport message
//! with a length prefix:
//!
//! | offset | size | field                                                   |
//! |-------:|-----:|---------------------------------------------------------|
//! | 0      | 2    | `len`, big-endian u16: length of `ciphertext`, 16..=65535 |
//! | 2      | len  | `ciphertext`: AES-256-GCM(plaintext) with the 16-byte tag at the end |
//!
//! The nonce is the direction's record counter (0, 1, 2, ...), encoded as Noise
//! does (4 zero bytes, then the counter as big-endian u64); the associated data is
//! empty. A record therefore carries at most [`MAX_RECORD_PLAINTEXT`] = 65,519
//! plaintext bytes. Records are a transport for a byte stream: one request may
//! span several records and one record may hold many requests, exactly like TLS
//! records. A record whose length is below 16, that fails authentication, or that
//! arrives out of order (which shows up as an authentication failure, since the
//! counter is implicit) is fatal: the receiver closes the connection.

use bytes::{Buf, BytesMut};

use super::SecureError;
use super::noise::{CipherState, TAGLEN};

/// Size of the length prefix.
pub const RECORD_HEADER_LEN: usize = 2;
/// Largest ciphertext (including tag) one record carries: Noise's message limit.
pub const MAX_RECORD_LEN: usize = u16::MAX as usize;
/// Largest plaintext one record carries.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_LEN - TAGLEN;

/// Encrypts an outgoing byte stream into records.
#[derive(Debug)]
pub struct RecordSealer {
    cipher: CipherState,
}

impl RecordSealer {
    /// Wraps the sending cipher from the handshake.
    pub fn new(cipher: CipherState) -> Self {
        Self { cipher }
    }

    /// Appends `plaintext` to `out` as as few records as the size limit allows.
    /// An empty `plaintext` writes nothing.
    ///
    /// # Errors
    /// [`SecureError::NonceExhausted`] after 2^64 - 1 records.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        out.reserve(plaintext.len() + plaintext.len().div_ceil(MAX_RECORD_PLAINTEXT) * (RECORD_HEADER_LEN + TAGLEN));
        for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
            let len = u16::try_from(chunk.len() + TAGLEN).map_err(|_| SecureError::RecordTooLarge)?;
            out.extend_from_slice(&len.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self.cipher.seal_in_place(&[], &mut out[start..])?;
            out.extend_from_slice(&tag);
        }
        Ok(())
    }
}

/// Decrypts an incoming record stream.
#[derive(Debug)]
pub struct RecordOpener {
    cipher: CipherState,
}

impl RecordOpener {
    /// Wraps the receiving cipher from the handshake.
    pub fn new(cipher: CipherState) -> Self {
        Self { cipher }
    }

    /// Decrypts every complete record at the front of `input`, removing it there
    /// and appending its plaintext to `plaintext`. An incomplete record stays in
    /// `input` until more bytes arrive. Returns the number of records opened.
    ///
    /// # Errors
    /// [`SecureError::RecordTooShort`] for a length below the tag size,
    /// [`SecureError::Authentication`] for a tampered, replayed or reordered record.
    pub fn open(&mut self, input: &mut BytesMut, plaintext: &mut BytesMut) -> Result<usize, SecureError> {
        let mut opened = 0;
        loop {
            if input.len() < RECORD_HEADER_LEN {
                return Ok(opened);
            }
            let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
            if len < TAGLEN {
                return Err(SecureError::RecordTooShort(len));
            }
            if input.len() < RECORD_HEADER_LEN + len {
                return Ok(opened);
            }
            input.advance(RECORD_HEADER_LEN);
            let body_len = len - TAGLEN;
            let start = plaintext.len();
            plaintext.extend_from_slice(&input[..body_len]);
            let mut tag = [0u8; TAGLEN];
            tag.copy_from_slice(&input[body_len..len]);
            input.advance(len);
            if let Err(e) = self.cipher.open_in_place(&[], &mut plaintext[start..], &tag) {
                plaintext.truncate(start);
                return Err(e);
            }
            opened += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::noise::{self, Initiator, responder_read_message};

    fn pair() -> (RecordSealer, RecordOpener) {
        let server = noise::random_secret().unwrap();
        let public = x25519_dalek::PublicKey::from(&server);
        let (m1, awaiting) = Initiator::new(public, b"p", noise::random_secret().unwrap()).write_message(&[]).unwrap();
        let (_, ready) = responder_read_message(&server, b"p", &m1).unwrap();
        let (m2, server_keys) = ready.write_message(&[], noise::random_secret().unwrap()).unwrap();
        let (_, client_keys) = awaiting.read_message(&m2).unwrap();
        (RecordSealer::new(client_keys.send), RecordOpener::new(server_keys.recv))
    }

    #[test]
    fn large_plaintext_spans_records_and_reassembles_byte_by_byte() {
        let (mut s, mut o) = pair();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        s.seal(&data, &mut wire).unwrap();
        assert_eq!(wire.len(), data.len() + 4 * (RECORD_HEADER_LEN + TAGLEN), "4 records");
        let mut input = BytesMut::new();
        let mut plain = BytesMut::new();
        for chunk in wire.chunks(7001) {
            input.extend_from_slice(chunk);
            o.open(&mut input, &mut plain).unwrap();
        }
        assert_eq!(&plain[..], &data[..]);
        assert!(input.is_empty());
    }

    #[test]
    fn tampered_reordered_and_short_records_fail() {
        let (mut s, mut o) = pair();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.seal(b"first", &mut a).unwrap();
        s.seal(b"second", &mut b).unwrap();
        let mut plain = BytesMut::new();
        assert!(matches!(o.open(&mut BytesMut::from(&b[..]), &mut plain), Err(SecureError::Authentication)));
        assert!(plain.is_empty(), "nothing of a failed record is released");

        let (mut s, mut o) = pair();
        let mut a = Vec::new();
        s.seal(b"first", &mut a).unwrap();
        let last = a.len() - 1;
        a[last] ^= 1;
        assert!(matches!(o.open(&mut BytesMut::from(&a[..]), &mut plain), Err(SecureError::Authentication)));

        let (_, mut o) = pair();
        assert!(matches!(
            o.open(&mut BytesMut::from(&[0u8, 15][..]), &mut plain),
            Err(SecureError::RecordTooShort(15))
        ));
    }

    #[test]
    fn incomplete_records_wait() {
        let (mut s, mut o) = pair();
        let mut wire = Vec::new();
        s.seal(b"hello", &mut wire).unwrap();
        let mut plain = BytesMut::new();
        for cut in 0..wire.len() {
            let mut input = BytesMut::from(&wire[..cut]);
            assert_eq!(o.open(&mut input, &mut plain).unwrap(), 0);
            assert_eq!(input.len(), cut, "an incomplete record is left in place");
        }
    }

    proptest::proptest! {
        #![proptest_config(cryptomem_testkit::cases())]

        /// Damaged records never open and release no plaintext; only the
        /// undamaged record (with bytes after it) opens; junk never opens.
        #[test]
        fn records_refuse_arbitrary_and_mutated_bytes(
            plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            m in cryptomem_testkit::mutations(),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let (mut sealer, mut opener) = pair();
            let mut wire = Vec::new();
            sealer.seal(&plain, &mut wire).unwrap();
            let damaged = cryptomem_testkit::mutate(wire.clone(), &m);
            let mut out = BytesMut::new();
            match opener.open(&mut BytesMut::from(&damaged[..]), &mut out) {
                Ok(n) if n > 0 => {
                    proptest::prop_assert!(damaged.starts_with(&wire));
                    proptest::prop_assert_eq!(&out[..], &plain[..]);
                }
                Ok(_) => proptest::prop_assert!(out.is_empty()),
                Err(_) => proptest::prop_assert!(out.is_empty(), "no plaintext from a failed record"),
            }
            let (_, mut opener) = pair();
            let mut out = BytesMut::new();
            let opened = opener.open(&mut BytesMut::from(&junk[..]), &mut out);
            proptest::prop_assert!(!matches!(opened, Ok(n) if n > 0), "junk opened as a record");
        }
    }
}
