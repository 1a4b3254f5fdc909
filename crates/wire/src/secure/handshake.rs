//! The connection opening: preamble, the two Noise messages, and rejections.
//!
//! Client to server, in one write:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 4    | magic `"CMEM"` (0x43 0x4D 0x45 0x4D)                          |
//! | 4      | 1    | wire version, currently 1                                    |
//! | 5      | 3    | reserved, zero                                               |
//! | 8      | 2    | `len1`, big-endian u16, 48..=1024                             |
//! | 10     | len1 | Noise message 1: client ephemeral key (32) + encrypted payload (payload + 16) |
//!
//! The 8 preamble bytes are the Noise prologue on both sides, so a modified
//! preamble fails the handshake. Server to client, either
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 2    | `len2`, big-endian u16, 48..=1024                             |
//! | 2      | len2 | Noise message 2: server ephemeral key (32) + encrypted payload (payload + 16) |
//!
//! or a rejection, after which the server closes the connection:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 2    | zero                                                         |
//! | 2      | 1    | reason (below) |
//!
//! | reason | meaning |
//! |-------:|---------|
//! | 1 | the 8 preamble bytes are not exactly magic, version 1 and three zero reserved bytes (a non-zero reserved byte is rejected too) |
//! | 2 | message 1 did not decrypt under any key the server accepts: the client pinned another server key (or sent a damaged message) |
//! | 3 | server busy: at its connection limit (sent at once, before reading anything) |
//! | 4 | `len1` outside 48..=1024: a malformed message, not a key mismatch (0.1.0 sent 2) |
//!
//! A server may accept several static keys at once (the current one and,
//! for a grace period after a rotation, retired ones): it tries message 1
//! against each, newest first, and answers with the one that decrypts it.
//! A client that pins several keys tries them one connection at a time,
//! moving on after reason 2.
//!
//! Clients should treat unknown reasons as "rejected". A rejection is unauthenticated, so clients report it as a hint only. Version
//! 1 sends empty handshake payloads; receivers ignore payload bytes. After
//! message 2 both sides split and switch to [`super::record`] framing.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use x25519_dalek::{PublicKey, StaticSecret};

use super::SecureError;
use super::noise::{self, DHLEN, TAGLEN, TransportKeys};

/// Magic at the start of every connection.
pub const PREAMBLE_MAGIC: [u8; 4] = *b"CMEM";
/// The wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 8;
/// The preamble (and Noise prologue) of wire version 1.
pub const PREAMBLE: [u8; PREAMBLE_LEN] =
    [PREAMBLE_MAGIC[0], PREAMBLE_MAGIC[1], PREAMBLE_MAGIC[2], PREAMBLE_MAGIC[3], WIRE_VERSION, 0, 0, 0];
/// Shortest valid handshake message: a public key and an empty payload's tag.
pub const MIN_HANDSHAKE_MESSAGE: usize = DHLEN + TAGLEN;
/// Longest handshake message accepted.
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024;

/// Why a server turned a connection away before the channel was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Bad magic or a wire version the server does not speak.
    UnsupportedPreamble = 1,
    /// Message 1 did not decrypt: the client pinned another server key.
    HandshakeFailed = 2,
    /// The server is at its connection limit.
    Busy = 3,
    /// Message 1's length is outside the allowed range.
    BadLength = 4,
}

impl RejectReason {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::UnsupportedPreamble),
            2 => Some(Self::HandshakeFailed),
            3 => Some(Self::Busy),
            4 => Some(Self::BadLength),
            _ => None,
        }
    }
}

/// Runs the client side of the handshake on `stream`, pinning `server_key`.
///
/// # Errors
/// [`SecureError::Rejected`] if the server refused (wrong key, busy, version),
/// [`SecureError::Io`] on a dropped connection, [`SecureError::Authentication`]
/// if the reply did not come from the holder of `server_key`.
pub async fn client_handshake<S>(stream: &mut S, server_key: &PublicKey) -> Result<TransportKeys, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let initiator = noise::Initiator::new(*server_key, &PREAMBLE, noise::random_secret()?);
    let (msg1, awaiting) = initiator.write_message(&[])?;
    let mut out = Vec::with_capacity(PREAMBLE_LEN + 2 + msg1.len());
    out.extend_from_slice(&PREAMBLE);
    out.extend_from_slice(
        &u16::try_from(msg1.len()).map_err(|_| SecureError::HandshakeMessage("message 1 too long"))?.to_be_bytes(),
    );
    out.extend_from_slice(&msg1);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let len = usize::from(read_u16(stream).await?);
    if len == 0 {
        let mut reason = [0u8; 1];
        stream.read_exact(&mut reason).await?;
        return Err(SecureError::Rejected(RejectReason::from_byte(reason[0])));
    }
    let msg2 = read_message(stream, len).await?;
    let (_payload, keys) = awaiting.read_message(&msg2)?;
    Ok(keys)
}

/// Runs the server side of the handshake with the static keys it accepts
/// (tried in order). On a bad preamble or a message 1 that decrypts under
/// none of them, the matching rejection is sent (best effort) before the
/// error is returned; the caller then drops the connection.
///
/// # Errors
/// [`SecureError::BadPreamble`], [`SecureError::Authentication`],
/// [`SecureError::HandshakeMessage`] or I/O errors.
pub async fn server_handshake<S>(stream: &mut S, accepted: &[StaticSecret]) -> Result<TransportKeys, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut preamble = [0u8; PREAMBLE_LEN];
    stream.read_exact(&mut preamble).await?;
    if preamble != PREAMBLE {
        reject(stream, RejectReason::UnsupportedPreamble).await;
        return Err(SecureError::BadPreamble(preamble));
    }
    let len = usize::from(read_u16(stream).await?);
    let msg1 = match read_message(stream, len).await {
        Ok(m) => m,
        Err(e) => {
            let reason = match e {
                SecureError::HandshakeMessage(_) => RejectReason::BadLength,
                _ => RejectReason::HandshakeFailed,
            };
            reject(stream, reason).await;
            return Err(e);
        }
    };
    let mut failure = SecureError::HandshakeMessage("the server accepts no static key");
    let mut ready = None;
    for key in accepted {
        match noise::responder_read_message(key, &PREAMBLE, &msg1) {
            Ok((_payload, r)) => {
                ready = Some(r);
                break;
            }
            Err(e) => failure = e,
        }
    }
    let Some(ready) = ready else {
        reject(stream, RejectReason::HandshakeFailed).await;
        return Err(failure);
    };
    let (msg2, keys) = ready.write_message(&[], noise::random_secret()?)?;
    let mut out = Vec::with_capacity(2 + msg2.len());
    out.extend_from_slice(
        &u16::try_from(msg2.len()).map_err(|_| SecureError::HandshakeMessage("message 2 too long"))?.to_be_bytes(),
    );
    out.extend_from_slice(&msg2);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(keys)
}

/// Sends a rejection and flushes it; errors are ignored because the
/// connection is being dropped either way.
pub async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, reason: RejectReason) {
    let _ = stream.write_all(&[0, 0, reason as u8]).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

async fn read_u16<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, SecureError> {
    let mut b = [0u8; 2];
    stream.read_exact(&mut b).await?;
    Ok(u16::from_be_bytes(b))
}

async fn read_message<S: AsyncRead + Unpin>(stream: &mut S, len: usize) -> Result<Vec<u8>, SecureError> {
    if !(MIN_HANDSHAKE_MESSAGE..=MAX_HANDSHAKE_MESSAGE).contains(&len) {
        return Err(SecureError::HandshakeMessage("handshake message length out of range"));
    }
    let mut msg = vec![0u8; len];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::ServerIdentity;

    async fn pair(pinned: PublicKey, accepted: &[StaticSecret]) -> Result<(), SecureError> {
        let (mut c, mut s) = tokio::io::duplex(4096);
        let (client, server) = tokio::join!(client_handshake(&mut c, &pinned), server_handshake(&mut s, accepted));
        let (client, server) = (client?, server?);
        assert_eq!(client.handshake_hash, server.handshake_hash);
        Ok(())
    }

    #[tokio::test]
    async fn a_server_accepting_two_keys_answers_a_client_pinning_either() {
        let (old, new) = (ServerIdentity::generate().unwrap(), ServerIdentity::generate().unwrap());
        let accepted = [new.secret().clone(), old.secret().clone()];
        pair(new.public(), &accepted).await.unwrap();
        pair(old.public(), &accepted).await.unwrap();
        let other = ServerIdentity::generate().unwrap();
        let refused = pair(other.public(), &accepted).await.unwrap_err();
        assert!(matches!(refused, SecureError::Rejected(Some(RejectReason::HandshakeFailed))), "{refused:?}");
        let none = pair(new.public(), &[]).await.unwrap_err();
        assert!(matches!(none, SecureError::Rejected(Some(RejectReason::HandshakeFailed))), "{none:?}");
    }
}
