//! The server's static X25519 key pair and its files.
//!
//! `server.key` (mode 0600) is UTF-8 text, two lines:
//!
//! ```text
//! cryptomem-server-key v1
//! <64 lowercase hex digits: the 32-byte X25519 private key>
//! ```
//!
//! `server.pub` holds the public key as 64 hex digits and a newline. That hex
//! string is what clients pin (`--server-key`, `CRYPTOMEM_SERVER_KEY`, or the
//! credentials file).

use std::fmt;
use std::path::Path;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::SecureError;
use super::noise::random_secret;

const KEY_FILE_HEADER: &str = "cryptomem-server-key v1";

/// The server's long-term Noise static key.
#[derive(Clone)]
pub struct ServerIdentity {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("public", &public_key_hex(&self.public))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ServerIdentity {
    /// A new random identity.
    ///
    /// # Errors
    /// [`SecureError::Random`] if the OS random source fails.
    pub fn generate() -> Result<Self, SecureError> {
        Ok(Self::from_secret(random_secret()?))
    }

    /// Wraps an existing secret.
    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The private half, for the handshake.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The public half that clients pin.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The public key as clients write it.
    pub fn public_hex(&self) -> String {
        public_key_hex(&self.public)
    }

    /// The `server.key` file contents.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{KEY_FILE_HEADER}\n{}\n", hex::encode(self.secret.as_bytes())))
    }

    /// Parses `server.key` contents.
    ///
    /// # Errors
    /// [`SecureError::KeyFile`] naming what is wrong (never the key bytes).
    pub fn from_key_file(text: &str) -> Result<Self, SecureError> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(KEY_FILE_HEADER) {
            return Err(SecureError::KeyFile(format!("missing the `{KEY_FILE_HEADER}` header line")));
        }
        let hex_line = lines.next().map(str::trim).unwrap_or_default();
        let bytes = Zeroizing::new(
            decode_key_hex(hex_line).ok_or_else(|| SecureError::KeyFile("the key line is not 64 hex digits".into()))?,
        );
        Ok(Self::from_secret(StaticSecret::from(*bytes)))
    }

    /// Reads `server.key` from `path`.
    ///
    /// # Errors
    /// I/O errors and [`SecureError::KeyFile`].
    pub fn load(path: &Path) -> Result<Self, SecureError> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| SecureError::KeyFile(format!("{}: {e}", path.display())))?,
        );
        Self::from_key_file(&text).map_err(|e| SecureError::KeyFile(format!("{}: {e}", path.display())))
    }
}

/// Formats a public key as 64 lowercase hex digits.
pub fn public_key_hex(key: &PublicKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parses a public key from 64 hex digits (surrounding white space ignored).
///
/// # Errors
/// [`SecureError::KeyFile`] if it is not exactly 32 hex-encoded bytes.
pub fn parse_public_key(text: &str) -> Result<PublicKey, SecureError> {
    decode_key_hex(text.trim())
        .map(PublicKey::from)
        .ok_or_else(|| SecureError::KeyFile("a server public key is 64 hex digits".into()))
}

fn decode_key_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip() {
        let id = ServerIdentity::generate().unwrap();
        let back = ServerIdentity::from_key_file(&id.to_key_file()).unwrap();
        assert_eq!(back.public().as_bytes(), id.public().as_bytes());
        assert_eq!(parse_public_key(&id.public_hex()).unwrap().as_bytes(), id.public().as_bytes());
    }

    #[test]
    fn bad_key_files_are_rejected_without_echoing_them() {
        for bad in ["", "cryptomem-server-key v1\n", "cryptomem-server-key v2\n00", "cryptomem-server-key v1\nzz"] {
            let err = ServerIdentity::from_key_file(bad).unwrap_err().to_string();
            assert!(err.contains("key"), "{err}");
        }
        let id = ServerIdentity::generate().unwrap();
        let secret_hex = hex::encode(id.secret().as_bytes());
        assert!(!format!("{id:?}").contains(&secret_hex));
        assert!(parse_public_key("abcd").is_err());
    }
}
