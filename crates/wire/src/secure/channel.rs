//! An encrypted connection after the handshake: the one place that reads
//! ciphertext from a socket, opens records into a plaintext buffer, and seals
//! plaintext into records for writing. The server's sessions, the client's
//! connection task and the test harness all use it, so buffering and record
//! handling are written once.
//!
//! The two halves are separate so that one task can read while another
//! writes (the client does); a single task simply holds both.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::noise::TransportKeys;
use super::{RecordOpener, RecordSealer, SecureError};

/// Bytes asked of the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// A buffer that grew past this for one large message is given back once
/// that message is gone (a 16 MiB value must not pin 16 MiB per connection).
const SHRINK_ABOVE: usize = 4 << 20;

/// The receiving half: the socket, the record opener and both buffers.
#[derive(Debug)]
pub struct ChannelReader<R> {
    io: R,
    opener: RecordOpener,
    wire: BytesMut,
    plain: BytesMut,
}

/// The sending half: the socket, the record sealer and a reusable buffer.
#[derive(Debug)]
pub struct ChannelWriter<W> {
    io: W,
    sealer: RecordSealer,
    wire: Vec<u8>,
}

/// Both halves of a channel over `R` and `W`, keyed by a finished handshake.
pub fn channel<R, W>(read: R, write: W, keys: TransportKeys) -> (ChannelReader<R>, ChannelWriter<W>) {
    let reader = ChannelReader {
        io: read,
        opener: RecordOpener::new(keys.recv),
        wire: BytesMut::with_capacity(READ_CHUNK),
        plain: BytesMut::new(),
    };
    (reader, ChannelWriter { io: write, sealer: RecordSealer::new(keys.send), wire: Vec::new() })
}

impl<R: AsyncRead + Unpin> ChannelReader<R> {
    /// Reads once from the socket and opens every complete record into the
    /// plaintext buffer. Returns the bytes read; 0 means the peer closed.
    ///
    /// # Errors
    /// I/O errors, and a record that fails to open (tampered, replayed,
    /// reordered, too short). The intact records before a bad one are
    /// opened into the plaintext buffer first, so their requests can still
    /// be answered.
    pub async fn fill(&mut self) -> Result<usize, SecureError> {
        if self.plain.capacity() > SHRINK_ABOVE && self.plain.len() < SHRINK_ABOVE / 4 {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.plain.len()));
            fresh.extend_from_slice(&self.plain);
            self.plain = fresh;
        }
        self.wire.reserve(READ_CHUNK);
        let n = self.io.read_buf(&mut self.wire).await?;
        if n > 0 {
            self.opener.open(&mut self.wire, &mut self.plain)?;
        }
        Ok(n)
    }
}

impl<R> ChannelReader<R> {
    /// The opened plaintext not yet consumed; decoders take from its front.
    pub fn plaintext(&mut self) -> &mut BytesMut {
        &mut self.plain
    }

    /// Bytes held for input not yet consumed: plaintext plus ciphertext of a
    /// record still arriving.
    pub fn buffered(&self) -> usize {
        self.plain.len() + self.wire.len()
    }

    /// The socket half, for callers that must reach it directly.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }
}

impl<W: AsyncWrite + Unpin> ChannelWriter<W> {
    /// Seals `plain` into records and writes them all.
    ///
    /// # Errors
    /// I/O errors; sealing fails only if the record counter is exhausted.
    pub async fn send(&mut self, plain: &[u8]) -> Result<(), SecureError> {
        self.wire.clear();
        self.sealer.seal(plain, &mut self.wire)?;
        self.io.write_all(&self.wire).await?;
        if self.wire.capacity() > SHRINK_ABOVE {
            self.wire = Vec::new();
        }
        Ok(())
    }
}

impl<W> ChannelWriter<W> {
    /// Seals `plain` into `out` without writing, for callers that send the
    /// bytes themselves (tests that split or reorder records).
    ///
    /// # Errors
    /// Only if the record counter is exhausted.
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        self.sealer.seal(plain, out)
    }

    /// The socket half, for callers that must reach it directly.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::{ServerIdentity, client_handshake, server_handshake};

    #[tokio::test]
    async fn a_message_larger_than_a_record_arrives_whole() {
        let identity = ServerIdentity::generate().unwrap();
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let public = identity.public();
        let (mut c, mut s) = (client_io, server_io);
        let (ck, sk) = tokio::join!(
            client_handshake(&mut c, &public),
            server_handshake(&mut s, std::slice::from_ref(identity.secret()))
        );
        let (cr, cw) = tokio::io::split(c);
        let (sr, sw) = tokio::io::split(s);
        let (_, mut client_writer) = channel(cr, cw, ck.unwrap());
        let (mut server_reader, _) = channel(sr, sw, sk.unwrap());
        let message: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let send = async { client_writer.send(&message).await.unwrap() };
        let receive = async {
            while server_reader.plaintext().len() < message.len() {
                assert!(server_reader.fill().await.unwrap() > 0);
            }
        };
        tokio::join!(send, receive);
        assert_eq!(server_reader.plaintext().as_ref(), &message[..]);
        assert_eq!(server_reader.buffered(), message.len());
    }

    #[tokio::test]
    async fn a_buffer_grown_for_one_large_message_is_given_back() {
        let identity = ServerIdentity::generate().unwrap();
        let (mut c, mut s) = tokio::io::duplex(1 << 20);
        let public = identity.public();
        let (ck, sk) = tokio::join!(
            client_handshake(&mut c, &public),
            server_handshake(&mut s, std::slice::from_ref(identity.secret()))
        );
        let (cr, cw) = tokio::io::split(c);
        let (sr, sw) = tokio::io::split(s);
        let (_, mut writer) = channel(cr, cw, ck.unwrap());
        let (mut reader, _) = channel(sr, sw, sk.unwrap());
        let big = vec![1u8; 8 << 20];
        let receive = async {
            while reader.plaintext().len() < big.len() {
                reader.fill().await.unwrap();
            }
        };
        tokio::join!(async { writer.send(&big).await.unwrap() }, receive);
        assert!(reader.plaintext().capacity() >= big.len());
        reader.plaintext().clear();
        writer.send(b"small").await.unwrap();
        reader.fill().await.unwrap();
        assert_eq!(reader.plaintext().as_ref(), b"small");
        assert!(reader.plaintext().capacity() <= SHRINK_ABOVE, "{}", reader.plaintext().capacity());
    }
}
