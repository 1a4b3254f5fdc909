//! Hidden key names: the server, its log, snapshots, `inspect --keys` and
//! SCAN see a keyed hash of each key name instead of the name.
//!
//! # What the server sees
//!
//! For a name `N` and separator `s` (default `:`): `P ‖ hex(T)`, where
//! - `P` is `N` up to and including its first `s` (empty when `N` has
//!   none), left in clear so that token key prefixes keep working;
//! - `T` is the first 16 bytes of `HMAC-SHA256(K, N)` over the whole name;
//! - `hex` is lower-case, so the stored name is `P` plus 32 characters;
//! - `K = HKDF-SHA256(salt = none, ikm = the 32 value-key bytes, info =
//!   "cryptomem hidden key names v1")`, 32 bytes.
//!
//! Sealed values keep binding the real name `N` as associated data, so a
//! value cannot be moved between names even by someone holding the server.
//!
//! The name key comes from one value key, chosen when the option is set
//! ([`HiddenNames::new`]). Key rotation must keep using that same key for
//! names (keep it in the keyring as a previous key): a different key gives
//! different names, and the old names could not be found again.
//!
//! Hashes are one-way: SCAN under hidden names lists `P ‖ hex(T)`, not the
//! names. The server still sees the namespace, the lengths, the timing and
//! the access pattern (which hashed name is read or written when).

use bytes::{BufMut, Bytes, BytesMut};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::value_crypto::ValueKey;

/// HKDF `info` for the name key.
const NAME_KEY_INFO: &[u8] = b"cryptomem hidden key names v1";
/// Bytes of the HMAC kept.
const TAG_LEN: usize = 16;

/// The hidden-names setting: see the module doc.
#[derive(Clone)]
pub struct HiddenNames {
    key: Zeroizing<[u8; 32]>,
    separator: u8,
}

impl std::fmt::Debug for HiddenNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiddenNames").field("separator", &char::from(self.separator)).finish_non_exhaustive()
    }
}

impl HiddenNames {
    /// Hides names under a key derived from `value_key`, keeping everything
    /// up to the first `separator` in clear.
    pub fn new(value_key: &ValueKey, separator: u8) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, value_key.secret_bytes().as_slice())
            .expand(NAME_KEY_INFO, key.as_mut())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
        Self { key, separator }
    }

    /// The name the server sees for `name`.
    pub fn wire_name(&self, name: &[u8]) -> Bytes {
        let clear = name.iter().position(|b| *b == self.separator).map_or(0, |at| at + 1);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(name);
        let tag = mac.finalize().into_bytes();
        let mut hex = [0u8; 2 * TAG_LEN];
        hex::encode_to_slice(&tag[..TAG_LEN], &mut hex)
            .unwrap_or_else(|_| unreachable!("the buffer holds exactly two digits per byte"));
        let mut out = BytesMut::with_capacity(clear + hex.len());
        out.put_slice(&name[..clear]);
        out.put_slice(&hex);
        out.freeze()
    }

    /// The clear part of a SCAN prefix: a prefix can only be matched on the
    /// server up to its first separator (the rest is hashed).
    pub fn wire_prefix(&self, prefix: &[u8]) -> Result<Bytes, &'static str> {
        match prefix.iter().position(|b| *b == self.separator) {
            Some(at) if at + 1 == prefix.len() => Ok(Bytes::copy_from_slice(prefix)),
            None if prefix.is_empty() => Ok(Bytes::new()),
            _ => Err("with hidden key names a SCAN prefix must be empty or a namespace ending in the separator"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_stays_clear_and_the_rest_is_a_keyed_hash() {
        let names = HiddenNames::new(&ValueKey::from_bytes([7; 32]), b':');
        let wire = names.wire_name(b"user:42:email");
        assert!(wire.starts_with(b"user:"));
        assert_eq!(wire.len(), 5 + 32);
        assert!(!wire.windows(2).any(|w| w == b"42"), "{wire:?}");
        assert_eq!(wire, names.wire_name(b"user:42:email"), "deterministic");
        assert_ne!(wire, names.wire_name(b"user:43:email"));
        assert_eq!(names.wire_name(b"plain").len(), 32, "no separator: all hashed");
        let other = HiddenNames::new(&ValueKey::from_bytes([8; 32]), b':');
        assert_ne!(wire, other.wire_name(b"user:42:email"), "keyed: another value key, other names");
        assert!(!format!("{names:?}").contains("key: "), "{names:?}");
    }

    /// Pins the construction for clients in other languages.
    #[test]
    fn known_answer() {
        let names = HiddenNames::new(&ValueKey::from_bytes([0x11; 32]), b':');
        // Key 0x11 * 32, separator ':', name "session:abc".
        assert_eq!(names.wire_name(b"session:abc"), &b"session:2ef77cd914a6cfa3fed563f5ff5236f2"[..]);
        assert_eq!(names.wire_prefix(b"session:").unwrap(), &b"session:"[..]);
        assert!(names.wire_prefix(b"sess").is_err());
    }
}
