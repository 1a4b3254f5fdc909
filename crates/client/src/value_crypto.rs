//! Client-side value encryption: the server only ever sees sealed values.
//!
//! # Sealed value format (version 1)
//!
//! | offset | size | field                                                      |
//! |-------:|-----:|------------------------------------------------------------|
//! | 0      | 1    | format version, 1                                          |
//! | 1      | 4    | key id, big-endian u32 (see below)                         |
//! | 5      | 12   | random 96-bit AES-GCM nonce                                |
//! | 17     | n    | AES-256-GCM ciphertext of the n-byte value                 |
//! | 17 + n | 16   | AES-GCM tag                                                |
//!
//! The associated data is bytes 0..5 (version and key id) followed by the
//! cache key the value is stored under. A server that moves a sealed value to
//! another key, or edits the header, makes it fail to open. Overhead: 33 bytes.
//!
//! Nonces come from the OS random source, fetched in bulk per thread
//! (`value_crypto/nonce.rs`).
//!
//! The key id is the first 4 bytes (big-endian) of
//! `SHA-256("cryptomem value key id v1" || 0x00 || key)`, where the string is
//! its 25 ASCII bytes and `key` is the 32 raw key bytes (never their hex
//! text), whichever form the key file had; the all-zero key's id is
//! `0x15617a1d`. It names a key
//! without revealing it, so a [`Keyring`] can hold old keys for reading while
//! a new one seals (rotation). With random nonces, seal fewer than 2^32 values
//! under one key, then rotate.
//!
//! # Key files
//!
//! A value key file holds 32 bytes, in any of three forms: exactly 32 raw
//! bytes (a file of exactly 32 bytes is always read this way); 64 hex digits;
//! or the text `cryptomem-value-key v1` on the first line and 64 hex digits on
//! the second (what `cryptomem keygen` writes, mode 0600). Hex digits may be
//! upper or lower case; blank lines and whitespace around a line are ignored;
//! anything else (a `0x` prefix, separators, a third line of text) is an
//! error.
//!
//! # Passphrases
//!
//! `ValueKey::from_passphrase` (feature `passphrase`) derives the key with Argon2id (m = 64 MiB,
//! t = 3, p = 1, 32-byte output) and a 16-byte random salt kept in a salt file:
//! `cryptomem-value-salt v1` on the first line and 32 hex digits on the second.
//! The salt is not secret, but every client must use the same one.

mod nonce;

use std::fmt;
use std::path::Path;

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The sealed format version this build writes.
pub const SEALED_VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const SEALED_HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes a sealed value adds to its plaintext.
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_LEN + TAG_LEN;
use nonce::NONCE_LEN;
const TAG_LEN: usize = 16;
const KEY_FILE_HEADER: &str = "cryptomem-value-key v1";
const SALT_FILE_HEADER: &str = "cryptomem-value-salt v1";
/// Length of a passphrase salt.
pub const SALT_LEN: usize = 16;
#[cfg(feature = "passphrase")]
const KDF_M_COST_KIB: u32 = 64 * 1024;
#[cfg(feature = "passphrase")]
const KDF_T_COST: u32 = 3;

/// Failures of sealing and opening values, and of value key files.
#[derive(Debug, thiserror::Error)]
pub enum ValueCryptoError {
    /// Shorter than a sealed value can be.
    #[error("stored value is not a sealed cryptomem value ({0} bytes is too short)")]
    Truncated(usize),
    /// A format version this build does not read.
    #[error("stored value has sealed-format version {0}; this client reads version 1")]
    UnsupportedVersion(u8),
    /// Sealed under a key this client does not hold.
    #[error(
        "value was sealed with value key {key_id:08x}, which this client does not have (wrong value key file or passphrase?)"
    )]
    UnknownKey {
        /// The key id in the sealed value.
        key_id: u32,
    },
    /// The tag did not verify.
    #[error("value failed authentication: it was modified, or moved from another key")]
    Authentication,
    /// A key or salt file is malformed or unreadable.
    #[error("{0}")]
    KeyFile(String),
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// Argon2 refused its parameters.
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
}

/// A 256-bit value key.
#[derive(Clone)]
pub struct ValueKey {
    bytes: Zeroizing<[u8; 32]>,
    id: u32,
    cipher: Aes256Gcm,
}

impl fmt::Debug for ValueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueKey {{ id: {:08x}, key: <redacted> }}", self.id)
    }
}

impl ValueKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"cryptomem value key id v1\0");
        hasher.update(bytes);
        let digest = hasher.finalize();
        let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes));
        Self { bytes: Zeroizing::new(bytes), id, cipher }
    }

    /// The key bytes, for deriving other keys from it (hidden key names).
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A new random key.
    ///
    /// # Errors
    /// [`ValueCryptoError::Random`].
    pub fn generate() -> Result<Self, ValueCryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|_| ValueCryptoError::Random)?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Derives a key from a passphrase and salt with Argon2id (parameters in
    /// the module docs). Needs the crate's `passphrase` feature.
    ///
    /// # Errors
    /// [`ValueCryptoError::Kdf`] for an empty passphrase or a short salt.
    #[cfg(feature = "passphrase")]
    pub fn from_passphrase(passphrase: &[u8], salt: &[u8]) -> Result<Self, ValueCryptoError> {
        if passphrase.is_empty() {
            return Err(ValueCryptoError::Kdf("the passphrase is empty".into()));
        }
        let params = argon2::Params::new(KDF_M_COST_KIB, KDF_T_COST, 1, Some(32))
            .map_err(|e| ValueCryptoError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon.hash_password_into(passphrase, salt, out.as_mut()).map_err(|e| ValueCryptoError::Kdf(e.to_string()))?;
        Ok(Self::from_bytes(*out))
    }

    /// The key id sealed values carry.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key file text `cryptomem keygen` writes.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(self.bytes.as_ref())))
    }

    /// Parses a key file in any of the three accepted forms.
    ///
    /// # Errors
    /// [`ValueCryptoError::KeyFile`] (the message never contains key material).
    pub fn from_key_file(contents: &[u8]) -> Result<Self, ValueCryptoError> {
        if let Ok(raw) = <[u8; 32]>::try_from(contents) {
            return Ok(Self::from_bytes(raw));
        }
        let text = std::str::from_utf8(contents)
            .map_err(|_| ValueCryptoError::KeyFile("value key file is neither 32 raw bytes nor text".into()))?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut hex_line = lines.next().unwrap_or_default();
        if hex_line == KEY_FILE_HEADER {
            hex_line = lines.next().unwrap_or_default();
        } else if hex_line.starts_with("cryptomem-value-key") {
            return Err(ValueCryptoError::KeyFile(format!("unsupported value key file version `{hex_line}`")));
        }
        if lines.next().is_some() {
            return Err(ValueCryptoError::KeyFile("value key file has text after the key".into()));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_line, bytes.as_mut())
            .map_err(|_| ValueCryptoError::KeyFile("value key file must hold 32 raw bytes or 64 hex digits".into()))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// [`ValueCryptoError::KeyFile`] naming the path.
    pub fn load(path: &Path) -> Result<Self, ValueCryptoError> {
        let contents =
            Zeroizing::new(std::fs::read(path).map_err(|e| {
                ValueCryptoError::KeyFile(format!("cannot read value key file {}: {e}", path.display()))
            })?);
        Self::from_key_file(&contents).map_err(|e| ValueCryptoError::KeyFile(format!("{}: {e}", path.display())))
    }
}

/// A new random passphrase salt.
///
/// # Errors
/// [`ValueCryptoError::Random`].
pub fn generate_salt() -> Result<[u8; SALT_LEN], ValueCryptoError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| ValueCryptoError::Random)?;
    Ok(salt)
}

/// The salt file text for `salt`.
pub fn salt_file_text(salt: &[u8; SALT_LEN]) -> String {
    format!("{SALT_FILE_HEADER}\n{}\n", hex::encode(salt))
}

/// Parses a salt file.
///
/// # Errors
/// [`ValueCryptoError::KeyFile`].
pub fn parse_salt_file(text: &str) -> Result<[u8; SALT_LEN], ValueCryptoError> {
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some(SALT_FILE_HEADER) {
        return Err(ValueCryptoError::KeyFile(format!("salt file must start with `{SALT_FILE_HEADER}`")));
    }
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(lines.next().unwrap_or_default(), &mut salt)
        .map_err(|_| ValueCryptoError::KeyFile("salt file must hold 32 hex digits".into()))?;
    Ok(salt)
}

/// The keys a client seals and opens with: one current key, plus older keys
/// that can still open values sealed before a rotation.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: ValueKey,
    previous: Vec<ValueKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(current: ValueKey) -> Self {
        Self { current, previous: Vec::new() }
    }

    /// Adds keys that open (but never seal) values.
    #[must_use]
    pub fn with_previous(mut self, keys: impl IntoIterator<Item = ValueKey>) -> Self {
        self.previous.extend(keys);
        self
    }

    /// The sealing key.
    pub fn current(&self) -> &ValueKey {
        &self.current
    }

    /// Seals `plaintext` for storage under `key_name`.
    ///
    /// # Errors
    /// [`ValueCryptoError::Random`] if no nonce can be drawn.
    pub fn seal(&self, key_name: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ValueCryptoError> {
        let mut out = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
        self.seal_into(key_name, plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals `plaintext` for storage under `key_name`, appending the sealed
    /// value ([`SEALED_OVERHEAD`] + `plaintext.len()` bytes) to `out`: a
    /// client seals straight into its request frame, so a value is copied
    /// once on its way out, not twice. On an error `out` is as it was.
    ///
    /// # Errors
    /// As [`Keyring::seal`].
    pub fn seal_into(&self, key_name: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), ValueCryptoError> {
        let start = out.len();
        let nonce = nonce::random_nonce().map_err(|_| ValueCryptoError::Random)?;
        out.reserve(SEALED_OVERHEAD + plaintext.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&self.current.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (header, body) = out[start..].split_at_mut(SEALED_HEADER_LEN);
        let tag = with_associated_data(&header[..5], key_name, |aad| {
            self.current.cipher.encrypt_inout_detached(&Nonce::from(nonce), aad, body.into())
        });
        match tag {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(ValueCryptoError::Authentication)
            }
        }
    }

    /// Opens a value read from `key_name`.
    ///
    /// # Errors
    /// [`ValueCryptoError::UnknownKey`] for a key this ring lacks,
    /// [`ValueCryptoError::Authentication`] for a tampered or moved value,
    /// [`ValueCryptoError::Truncated`] / [`ValueCryptoError::UnsupportedVersion`]
    /// for something that is not a sealed value.
    pub fn open(&self, key_name: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ValueCryptoError> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(ValueCryptoError::Truncated(sealed.len()));
        }
        if sealed[0] != SEALED_VERSION {
            return Err(ValueCryptoError::UnsupportedVersion(sealed[0]));
        }
        let key_id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or(ValueCryptoError::UnknownKey { key_id })?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[5..SEALED_HEADER_LEN]);
        let body_end = sealed.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[body_end..]);
        // Decrypted from the sealed bytes into the new buffer, not copied
        // there first and decrypted in place: one pass over a large value
        // fewer.
        let body = &sealed[SEALED_HEADER_LEN..body_end];
        let mut plaintext = vec![0u8; body.len()];
        let buffer = InOutBuf::new(body, &mut plaintext).map_err(|_| ValueCryptoError::Truncated(sealed.len()))?;
        with_associated_data(&sealed[..5], key_name, |aad| {
            key.cipher.decrypt_inout_detached(&Nonce::from(nonce), aad, buffer, &tag.into())
        })
        .map_err(|_| ValueCryptoError::Authentication)?;
        Ok(plaintext)
    }
}

/// Runs `f` on header || key name, on the stack for the usual short keys.
fn with_associated_data<R>(header: &[u8], key_name: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const INLINE: usize = 256;
    let len = header.len() + key_name.len();
    if len <= INLINE {
        let mut aad = [0u8; INLINE];
        aad[..header.len()].copy_from_slice(header);
        aad[header.len()..len].copy_from_slice(key_name);
        f(&aad[..len])
    } else {
        f(&[header, key_name].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(ValueKey::from_bytes([5; 32]))
    }

    #[test]
    fn sealing_into_a_frame_appends_what_seal_returns() {
        let r = ring();
        let mut frame = b"head".to_vec();
        r.seal_into(b"k", b"value", &mut frame).unwrap();
        assert_eq!(&frame[..4], b"head", "what was there stays");
        assert_eq!(frame.len(), 4 + SEALED_OVERHEAD + 5);
        assert_eq!(r.open(b"k", &frame[4..]).unwrap(), b"value");
        assert!(r.open(b"other", &frame[4..]).is_err(), "bound to its key as seal's output is");
    }

    #[test]
    fn round_trip_and_overhead() {
        let r = ring();
        for len in [0usize, 1, 100, 70_000] {
            let v = vec![0xAB; len];
            let sealed = r.seal(b"k", &v).unwrap();
            assert_eq!(sealed.len(), len + SEALED_OVERHEAD);
            assert_eq!(r.open(b"k", &sealed).unwrap(), v);
        }
    }

    #[test]
    fn moved_or_tampered_values_fail() {
        let r = ring();
        let sealed = r.seal(b"a", b"secret").unwrap();
        assert!(matches!(r.open(b"b", &sealed), Err(ValueCryptoError::Authentication)));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(r.open(b"a", &bad).is_err(), "flip at {i} went unnoticed");
        }
        assert!(matches!(r.open(b"a", &sealed[..10]), Err(ValueCryptoError::Truncated(10))));
    }

    #[test]
    fn wrong_key_is_named_and_rotation_reads_old_values() {
        let old = ValueKey::from_bytes([1; 32]);
        let new = ValueKey::from_bytes([2; 32]);
        let sealed_old = Keyring::new(old.clone()).seal(b"k", b"v1").unwrap();
        let err = Keyring::new(new.clone()).open(b"k", &sealed_old).unwrap_err();
        assert!(matches!(err, ValueCryptoError::UnknownKey { key_id } if key_id == old.id()));
        let rotated = Keyring::new(new.clone()).with_previous([old]);
        assert_eq!(rotated.open(b"k", &sealed_old).unwrap(), b"v1");
        let sealed_new = rotated.seal(b"k", b"v2").unwrap();
        assert_eq!(&sealed_new[1..5], &new.id().to_be_bytes());
    }

    #[test]
    fn key_files_in_all_three_forms() {
        let key = ValueKey::generate().unwrap();
        let text = key.to_key_file();
        assert_eq!(ValueKey::from_key_file(text.as_bytes()).unwrap().id(), key.id());
        let hex_only = text.lines().nth(1).unwrap().to_string();
        assert_eq!(ValueKey::from_key_file(hex_only.as_bytes()).unwrap().id(), key.id());
        assert_eq!(ValueKey::from_key_file(&[9u8; 32]).unwrap().id(), ValueKey::from_bytes([9; 32]).id());
        assert!(ValueKey::from_key_file(b"cryptomem-value-key v2\n00").is_err());
        assert!(ValueKey::from_key_file(b"short").is_err());
        assert!(!format!("{key:?}").contains(&hex_only));
        // Either case, whitespace around lines; no prefixes, no extra lines.
        let upper = format!("  {}  \n\n", hex_only.to_uppercase());
        assert_eq!(ValueKey::from_key_file(upper.as_bytes()).unwrap().id(), key.id());
        assert!(ValueKey::from_key_file(format!("0x{hex_only}").as_bytes()).is_err());
        assert!(ValueKey::from_key_file(format!("{}more\n", text.as_str()).as_bytes()).is_err());
    }

    #[test]
    fn the_key_id_hashes_the_raw_key_bytes() {
        // The known answer in the module docs, for other implementations.
        assert_eq!(ValueKey::from_bytes([0; 32]).id(), 0x1561_7a1d);
    }

    #[test]
    #[cfg(feature = "passphrase")]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let salt = generate_salt().unwrap();
        let a = ValueKey::from_passphrase(b"correct horse", &salt).unwrap();
        let b = ValueKey::from_passphrase(b"correct horse", &salt).unwrap();
        let c = ValueKey::from_passphrase(b"correct horse", &[0; SALT_LEN]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert!(ValueKey::from_passphrase(b"", &salt).is_err());
        assert_eq!(parse_salt_file(&salt_file_text(&salt)).unwrap(), salt);
        assert!(parse_salt_file("nope").is_err());
    }
}
