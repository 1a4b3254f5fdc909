//! The encrypted channel: a Noise_NK_25519_AESGCM_SHA256 handshake, then
//! AES-256-GCM records.
//!
//! A connection is, in order:
//!
//! 1. the client's 8-byte preamble and Noise message 1, and the server's
//!    message 2 or a rejection ([`handshake`] has the byte layout);
//! 2. records in both directions ([`record`]), whose plaintext is the request
//!    and response stream of [`crate::protocol`].
//!
//! The handshake is standard Noise (spec revision 34, pattern NK, DH 25519,
//! cipher AESGCM, hash SHA256, prologue = the 8 preamble bytes, empty
//! payloads), so any Noise library can talk to a cryptomem server: frame
//! message 1 and 2 with a big-endian u16 length, and every transport message
//! with the same u16 length. The client pins the server's static public key
//! (like SSH `known_hosts`); nothing is sent in the clear after the preamble.
//!
//! Limits: handshake messages 48..=1024 bytes; records 16..=65535 bytes of
//! ciphertext; the server gives the whole handshake a timeout (10 s default).

pub mod channel;
pub mod handshake;
pub mod identity;
pub mod noise;
pub mod record;

pub use channel::{ChannelReader, ChannelWriter, channel};
pub use handshake::{RejectReason, client_handshake, server_handshake};
pub use identity::{ServerIdentity, parse_public_key, public_key_hex};
pub use noise::TransportKeys;
pub use record::{RecordOpener, RecordSealer};

/// Failures of the handshake or the record layer. None of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The socket failed or closed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not start with the cryptomem preamble.
    #[error("not a cryptomem client: unexpected preamble {0:02x?}")]
    BadPreamble([u8; 8]),
    /// The server refused the handshake.
    #[error("{}", rejection_text(*.0))]
    Rejected(Option<RejectReason>),
    /// A handshake message is malformed.
    #[error("malformed handshake: {0}")]
    HandshakeMessage(&'static str),
    /// A message or record failed AES-GCM authentication.
    #[error("authentication failed: the data was tampered with, reordered, or encrypted under another key")]
    Authentication,
    /// A record length below the tag size.
    #[error("record length {0} is below the 16-byte minimum")]
    RecordTooShort(usize),
    /// Plaintext that does not fit in a record (internal misuse).
    #[error("record too large")]
    RecordTooLarge,
    /// A DH result of zero: the peer sent a low-order point.
    #[error("peer sent a low-order public key")]
    LowOrderPoint,
    /// 2^64 - 1 messages were sent on one key.
    #[error("nonce counter exhausted; reconnect")]
    NonceExhausted,
    /// The OS random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// AES-GCM refused to encrypt (length limits).
    #[error("encryption failed")]
    Crypto,
    /// A key file is malformed.
    #[error("key file: {0}")]
    KeyFile(String),
}

fn rejection_text(reason: Option<RejectReason>) -> &'static str {
    match reason {
        Some(RejectReason::HandshakeFailed) => {
            "server rejected the handshake: the server public key this client pinned is not one the server accepts (if its key was rotated, `cryptomem server-key list` on the server shows the accepted ones)"
        }
        Some(RejectReason::Busy) => "server is busy: it has reached its connection limit",
        Some(RejectReason::UnsupportedPreamble) => "server does not speak this wire version",
        Some(RejectReason::BadLength) => "server rejected the handshake: message 1's length is outside 48..=1024",
        None => "server rejected the handshake (unknown reason)",
    }
}
