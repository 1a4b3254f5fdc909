//! Client errors.

use crate::credentials::CredentialsError;
use crate::secure::SecureError;
use crate::value_crypto::ValueCryptoError;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect failed or timed out.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The server address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The encrypted channel could not be set up (wrong server key, busy server, ...).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The server address.
        addr: String,
        /// The cause.
        source: SecureError,
    },
    /// The server refused the token.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server answered with an error.
    #[error("server error {code}: {message}")]
    Server {
        /// Redis-style code: `ERR`, `NOAUTH`, `NOPERM`, `TOOBIG`, `PROTO`, ...
        code: String,
        /// Human-readable text.
        message: String,
    },
    /// The connection broke while the request was in flight; it may or may not
    /// have been executed. The next call reconnects.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// No response within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The server sent something that is not valid protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Sealing or opening a value failed (wrong value key, tampered value, ...).
    #[error(transparent)]
    ValueCrypto(#[from] ValueCryptoError),
    /// A sealed-value call on a client built without a value key.
    #[error("this client has no value key: configure one to read or write encrypted values")]
    NoValueKey,
    /// The credentials file is unusable.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// SETV / DELETEV: the key's version was not the one given; nothing was written.
    #[error("version conflict: {0}")]
    Conflict(String),
    /// [`crate::Client::update`] met a conflict on every attempt.
    #[error("update gave up after {attempts} attempts: the key kept changing")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// A [`crate::ShardedClient`]'s server could not be reached or stopped
    /// answering (connection refused, lost or timed out): the keys it owns
    /// fail with this until it is back. Another server's keys are not
    /// affected.
    #[error("server {server} is unavailable: {reason}")]
    Unavailable {
        /// The server's name in the cluster (its address unless named).
        server: String,
        /// The underlying connection error.
        reason: String,
    },
    /// An argument the protocol cannot carry (a key over 65,535 bytes, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
