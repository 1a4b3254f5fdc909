//! The Noise_NK_25519_AESGCM_SHA256 handshake (Noise spec revision 34), built on
//! x25519-dalek, hkdf and aes-gcm.
//!
//! Only the NK pattern is implemented, and only what it needs:
//!
//! ```text
//! NK:
//!   <- s
//!   ...
//!   -> e, es
//!   <- e, ee
//! ```
//!
//! The initiator (client) knows the responder's (server's) static public key in
//! advance; the server is authenticated by being able to compute `es`, the
//! client is anonymous at this layer (it proves itself with AUTH inside the
//! channel). Both sides mix the prologue (the connection preamble, see
//! [`super::handshake`]) into the handshake hash so a tampered preamble fails
//! the handshake.
//!
//! Primitives, exactly as the spec names them:
//! - `DH` = X25519, `DHLEN` = 32. A DH result of all zeros (a low-order peer
//!   point) is rejected.
//! - `HASH` = SHA-256, `HASHLEN` = 32, `HKDF(ck, ikm)` = RFC 5869 HKDF-SHA256
//!   with salt `ck`, empty info, 64 bytes of output split into two keys.
//! - `ENCRYPT(k, n, ad, p)` = AES-256-GCM with a 96-bit nonce of four zero bytes
//!   followed by the 64-bit big-endian counter `n`; 16-byte tag appended.
//!   `n = 2^64 - 1` is never used: the cipher refuses to go on instead.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use super::SecureError;

/// The full Noise protocol name; it is also the initial handshake hash input.
pub const PROTOCOL_NAME: &[u8] = b"Noise_NK_25519_AESGCM_SHA256";
/// Length of an X25519 public key on the wire.
pub const DHLEN: usize = 32;
/// Length of the AES-GCM authentication tag.
pub const TAGLEN: usize = 16;
const HASHLEN: usize = 32;

/// One direction's AEAD key and nonce counter (Noise `CipherState`).
pub struct CipherState {
    cipher: Aes256Gcm,
    nonce: u64,
}

impl std::fmt::Debug for CipherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherState").field("key", &"<redacted>").field("nonce", &self.nonce).finish()
    }
}

impl CipherState {
    fn new(mut key: [u8; 32]) -> Self {
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(key));
        key.zeroize();
        Self { cipher, nonce: 0 }
    }

    /// The counter the next operation will use.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    fn next_nonce(&mut self) -> Result<Nonce<aes_gcm::aead::consts::U12>, SecureError> {
        if self.nonce == u64::MAX {
            return Err(SecureError::NonceExhausted);
        }
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&self.nonce.to_be_bytes());
        self.nonce += 1;
        Ok(Nonce::from(bytes))
    }

    /// Encrypts `buf` in place and returns the tag to append.
    ///
    /// # Errors
    /// [`SecureError::NonceExhausted`] after 2^64 - 1 messages.
    pub fn seal_in_place(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAGLEN], SecureError> {
        let nonce = self.next_nonce()?;
        let tag = self.cipher.encrypt_inout_detached(&nonce, ad, buf.into()).map_err(|_| SecureError::Crypto)?;
        Ok(tag.into())
    }

    /// Decrypts `buf` in place, checking `tag`. The counter advances only on success,
    /// but callers close the connection on any failure anyway.
    ///
    /// # Errors
    /// [`SecureError::Authentication`] if the tag does not match.
    pub fn open_in_place(&mut self, ad: &[u8], buf: &mut [u8], tag: &[u8; TAGLEN]) -> Result<(), SecureError> {
        if self.nonce == u64::MAX {
            return Err(SecureError::NonceExhausted);
        }
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&self.nonce.to_be_bytes());
        self.cipher
            .decrypt_inout_detached(&Nonce::from(bytes), ad, buf.into(), &(*tag).into())
            .map_err(|_| SecureError::Authentication)?;
        self.nonce += 1;
        Ok(())
    }

    fn encrypt_vec(&mut self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SecureError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAGLEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(ad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn decrypt_vec(&mut self, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, SecureError> {
        let body_len = ciphertext.len().checked_sub(TAGLEN).ok_or(SecureError::Authentication)?;
        let mut out = ciphertext[..body_len].to_vec();
        let mut tag = [0u8; TAGLEN];
        tag.copy_from_slice(&ciphertext[body_len..]);
        self.open_in_place(ad, &mut out, &tag)?;
        Ok(out)
    }
}

/// Noise `SymmetricState`: chaining key, handshake hash and the current cipher.
struct SymmetricState {
    ck: [u8; HASHLEN],
    h: [u8; HASHLEN],
    cipher: Option<CipherState>,
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
    }
}

impl SymmetricState {
    fn new(prologue: &[u8]) -> Self {
        // PROTOCOL_NAME is 28 bytes <= HASHLEN, so h is the name zero-padded.
        let mut h = [0u8; HASHLEN];
        h[..PROTOCOL_NAME.len()].copy_from_slice(PROTOCOL_NAME);
        let mut state = Self { ck: h, h, cipher: None };
        state.mix_hash(prologue);
        state
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h = hasher.finalize().into();
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, mut temp_k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.cipher = Some(CipherState::new(temp_k));
        temp_k.zeroize();
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SecureError> {
        let h = self.h;
        let out = match self.cipher.as_mut() {
            Some(cipher) => cipher.encrypt_vec(&h, plaintext)?,
            None => plaintext.to_vec(),
        };
        self.mix_hash(&out);
        Ok(out)
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, SecureError> {
        let h = self.h;
        let out = match self.cipher.as_mut() {
            Some(cipher) => cipher.decrypt_vec(&h, ciphertext)?,
            None => ciphertext.to_vec(),
        };
        self.mix_hash(ciphertext);
        Ok(out)
    }

    /// Returns (initiator-to-responder, responder-to-initiator) ciphers.
    fn split(&self) -> (CipherState, CipherState) {
        let (mut k1, mut k2) = hkdf2(&self.ck, &[]);
        let pair = (CipherState::new(k1), CipherState::new(k2));
        k1.zeroize();
        k2.zeroize();
        pair
    }
}

fn hkdf2(ck: &[u8; HASHLEN], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(ck), ikm).expand(&[], &mut okm).expect("64 bytes is a valid HKDF-SHA256 output length");
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (a, b)
}

fn dh(secret: &StaticSecret, public: &PublicKey) -> Result<[u8; 32], SecureError> {
    let shared = secret.diffie_hellman(public).to_bytes();
    if bool::from(shared.ct_eq(&[0u8; 32])) {
        return Err(SecureError::LowOrderPoint);
    }
    Ok(shared)
}

fn read_public(bytes: &[u8]) -> Result<PublicKey, SecureError> {
    let arr: [u8; DHLEN] = bytes
        .get(..DHLEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(SecureError::HandshakeMessage("message shorter than a public key"))?;
    Ok(PublicKey::from(arr))
}

/// The two directions of an established channel.
#[derive(Debug)]
pub struct TransportKeys {
    /// Encrypts what this side sends.
    pub send: CipherState,
    /// Decrypts what this side receives.
    pub recv: CipherState,
    /// The final handshake hash, identical on both sides (channel binding).
    pub handshake_hash: [u8; 32],
}

/// The client side of NK, before message 1 is written.
pub struct Initiator {
    state: SymmetricState,
    ephemeral: StaticSecret,
    server_static: PublicKey,
}

/// The client side of NK, waiting for message 2.
pub struct InitiatorAwaitingReply {
    state: SymmetricState,
    ephemeral: StaticSecret,
}

impl Initiator {
    /// Starts a handshake towards the server whose static key is `server_static`.
    /// `ephemeral` must be fresh randomness except in known-answer tests.
    pub fn new(server_static: PublicKey, prologue: &[u8], ephemeral: StaticSecret) -> Self {
        let mut state = SymmetricState::new(prologue);
        state.mix_hash(server_static.as_bytes());
        Self { state, ephemeral, server_static }
    }

    /// Writes message 1: `e, es, payload`.
    ///
    /// # Errors
    /// [`SecureError::LowOrderPoint`] if the pinned server key is a low-order point.
    pub fn write_message(mut self, payload: &[u8]) -> Result<(Vec<u8>, InitiatorAwaitingReply), SecureError> {
        let e_pub = PublicKey::from(&self.ephemeral);
        let mut msg = e_pub.as_bytes().to_vec();
        self.state.mix_hash(e_pub.as_bytes());
        let es = dh(&self.ephemeral, &self.server_static)?;
        self.state.mix_key(&es);
        msg.extend_from_slice(&self.state.encrypt_and_hash(payload)?);
        Ok((msg, InitiatorAwaitingReply { state: self.state, ephemeral: self.ephemeral }))
    }
}

impl InitiatorAwaitingReply {
    /// Reads message 2: `e, ee, payload`, and splits.
    ///
    /// # Errors
    /// [`SecureError::Authentication`] if the reply was not made by the holder of
    /// the pinned server key, or a malformed message.
    pub fn read_message(mut self, msg: &[u8]) -> Result<(Vec<u8>, TransportKeys), SecureError> {
        let re = read_public(msg)?;
        self.state.mix_hash(re.as_bytes());
        let ee = dh(&self.ephemeral, &re)?;
        self.state.mix_key(&ee);
        let payload = self.state.decrypt_and_hash(&msg[DHLEN..])?;
        let (c1, c2) = self.state.split();
        let keys = TransportKeys { send: c1, recv: c2, handshake_hash: self.state.h };
        Ok((payload, keys))
    }
}

/// The server side of NK after message 1 was read, ready to reply.
pub struct ResponderReadyToReply {
    state: SymmetricState,
    client_ephemeral: PublicKey,
}

/// Reads message 1 on the server side.
///
/// # Errors
/// [`SecureError::Authentication`] when the client did not encrypt to our static
/// key (it pinned a different server key), or a malformed message.
pub fn responder_read_message(
    server_static: &StaticSecret,
    prologue: &[u8],
    msg: &[u8],
) -> Result<(Vec<u8>, ResponderReadyToReply), SecureError> {
    let mut state = SymmetricState::new(prologue);
    state.mix_hash(PublicKey::from(server_static).as_bytes());
    let re = read_public(msg)?;
    state.mix_hash(re.as_bytes());
    let es = dh(server_static, &re)?;
    state.mix_key(&es);
    let payload = state.decrypt_and_hash(&msg[DHLEN..])?;
    Ok((payload, ResponderReadyToReply { state, client_ephemeral: re }))
}

impl ResponderReadyToReply {
    /// Writes message 2: `e, ee, payload`, and splits.
    ///
    /// # Errors
    /// [`SecureError::LowOrderPoint`] if the client's ephemeral key was low-order.
    pub fn write_message(
        mut self,
        payload: &[u8],
        ephemeral: StaticSecret,
    ) -> Result<(Vec<u8>, TransportKeys), SecureError> {
        let e_pub = PublicKey::from(&ephemeral);
        let mut msg = e_pub.as_bytes().to_vec();
        self.state.mix_hash(e_pub.as_bytes());
        let ee = dh(&ephemeral, &self.client_ephemeral)?;
        self.state.mix_key(&ee);
        msg.extend_from_slice(&self.state.encrypt_and_hash(payload)?);
        let (c1, c2) = self.state.split();
        Ok((msg, TransportKeys { send: c2, recv: c1, handshake_hash: self.state.h }))
    }
}

/// A fresh random X25519 secret.
///
/// # Errors
/// [`SecureError::Random`] if the OS random source fails.
pub fn random_secret() -> Result<StaticSecret, SecureError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| SecureError::Random)?;
    let secret = StaticSecret::from(bytes);
    bytes.zeroize();
    Ok(secret)
}
