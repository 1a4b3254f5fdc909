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

    /// How many more bytes the record at the front of `input` needs, so readers
    /// can size their next read. Zero when a whole record is already buffered.
    pub fn bytes_wanted(input: &[u8]) -> usize {
        if input.len() < RECORD_HEADER_LEN {
            return RECORD_HEADER_LEN - input.len();
        }
        let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
        (RECORD_HEADER_LEN + len).saturating_sub(input.len())
    }
}
