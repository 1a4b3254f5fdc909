//! One multiplexed connection: a task that writes batches of requests and
//! reads responses, matching them to callers in order.
//!
//! Callers hand pre-encoded requests and a oneshot to the task over a bounded
//! channel: one request and one response ([`Reply::One`]), or a pipeline of
//! `n` requests answered by one oneshot carrying all `n` responses
//! ([`Reply::Many`]). The writer side takes everything queued (up to
//! [`BATCH_BYTES`]), registers the callers' oneshots in order, seals the batch
//! into records and writes it at once; the reader side opens records, decodes
//! responses and completes the oldest waiting caller once it has all of its
//! responses. When either side fails, every waiting caller gets
//! [`Error::ConnectionLost`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::error::{Error, Result};
use crate::protocol::{Request, Response, Status, decode_response, encode_request};
use crate::secure::{ChannelReader, ChannelWriter, RejectReason, SecureError, channel, client_handshake};
use cryptomem_wire::Token;

type Reader = ChannelReader<OwnedReadHalf>;
type Writer = ChannelWriter<OwnedWriteHalf>;

/// Most request bytes sealed and written as one batch.
pub const BATCH_BYTES: usize = 1 << 20;
const QUEUE_DEPTH: usize = 4096;

type Waiters = Arc<Mutex<VecDeque<Reply>>>;

/// A pipeline's responses and when the first of them was read.
pub(super) type Timed = (Vec<Response>, Instant);

/// Where the responses to one submission go.
pub(super) enum Reply {
    /// One request, one response.
    One(oneshot::Sender<Result<Response>>),
    /// `expected` requests (at least one), answered together in order, with
    /// the instant the first response was read.
    Many { expected: usize, got: Vec<Response>, first_at: Option<Instant>, tx: oneshot::Sender<Result<Timed>> },
}

impl Reply {
    /// Takes one response; returns whether this waiter is complete.
    fn take(&mut self, response: Response) -> Option<Response> {
        match self {
            Self::One(_) => Some(response),
            Self::Many { got, first_at, .. } => {
                first_at.get_or_insert_with(Instant::now);
                got.push(response);
                None
            }
        }
    }

    fn is_complete(&self) -> bool {
        match self {
            Self::One(_) => false,
            Self::Many { expected, got, .. } => got.len() >= *expected,
        }
    }

    fn complete(self, last: Option<Response>) {
        match (self, last) {
            (Self::One(tx), Some(r)) => drop(tx.send(Ok(r))),
            (Self::Many { got, first_at, tx, .. }, _) => {
                drop(tx.send(Ok((got, first_at.unwrap_or_else(Instant::now)))))
            }
            (Self::One(_), None) => {}
        }
    }

    fn fail(self, reason: &str) {
        match self {
            Self::One(tx) => drop(tx.send(Err(Error::ConnectionLost(reason.to_string())))),
            Self::Many { tx, .. } => drop(tx.send(Err(Error::ConnectionLost(reason.to_string())))),
        }
    }
}

/// Requests on their way to the connection task: one encoded request, or
/// several back to back.
pub(super) struct Pending {
    pub(super) frame: Vec<u8>,
    pub(super) reply: Reply,
}

/// Handle to a live connection task.
pub(super) struct Connection {
    tx: mpsc::Sender<Pending>,
}

/// What a connection needs to know.
pub(super) struct ConnectParams<'a> {
    pub(super) addr: &'a str,
    /// Tried in order: the next one only after the server refused the
    /// handshake as encrypted to a key it does not hold.
    pub(super) server_keys: &'a [x25519_dalek::PublicKey],
    pub(super) token: &'a Token,
    pub(super) connect_timeout: Duration,
    pub(super) max_response_len: usize,
}

impl Connection {
    /// Connects, runs the handshake and AUTH, and starts the connection task.
    pub(super) async fn open(p: &ConnectParams<'_>) -> Result<Self> {
        let (stream, keys) = secure_stream(p).await?;
        let (read, write) = stream.into_split();
        let (mut reader, mut writer) = channel(read, write, keys);

        let mut frame = Vec::new();
        encode_request(&Request::Auth { token: bytes::Bytes::from(p.token.expose().as_bytes().to_vec()) }, &mut frame)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        writer.send(&frame).await.map_err(|e| Error::ConnectionLost(e.to_string()))?;
        let reply = loop {
            if let Some(r) =
                decode_response(reader.plaintext(), p.max_response_len).map_err(|e| Error::Protocol(e.to_string()))?
            {
                break r;
            }
            read_some(&mut reader).await?;
        };
        if reply.status != Status::Ok {
            let (code, message) = reply.error_parts().unwrap_or_default();
            return Err(Error::Auth(format!("{code} {message}")));
        }

        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let waiters: Waiters = Arc::default();
        let max_response_len = p.max_response_len;
        tokio::spawn(async move {
            let reason = tokio::select! {
                r = write_loop(rx, writer, Arc::clone(&waiters)) => r,
                r = read_loop(reader, Arc::clone(&waiters), max_response_len) => r,
            };
            let drained: Vec<Reply> = lock(&waiters).drain(..).collect();
            for w in drained {
                w.fail(&reason);
            }
        });
        Ok(Self { tx })
    }

    /// Whether the task is still running.
    pub(super) fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Queues a request. Returns it back if the connection is gone, so the
    /// caller can retry it elsewhere: it was certainly not sent.
    pub(super) async fn submit(&self, pending: Pending) -> std::result::Result<(), Pending> {
        self.tx.send(pending).await.map_err(|e| e.0)
    }
}

/// TCP connect and handshake, trying the pinned keys in order.
async fn secure_stream(p: &ConnectParams<'_>) -> Result<(TcpStream, crate::secure::TransportKeys)> {
    let connect_err = |reason: String| Error::Connect { addr: p.addr.to_string(), reason };
    let mut refused = None;
    for key in p.server_keys {
        let mut stream = tokio::time::timeout(p.connect_timeout, TcpStream::connect(p.addr))
            .await
            .map_err(|_| connect_err(format!("timed out after {:?}", p.connect_timeout)))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(p.connect_timeout, client_handshake(&mut stream, key))
            .await
            .map_err(|_| connect_err("handshake timed out".into()))?
        {
            Ok(keys) => return Ok((stream, keys)),
            Err(source @ SecureError::Rejected(Some(RejectReason::HandshakeFailed))) => refused = Some(source),
            Err(source) => return Err(Error::Handshake { addr: p.addr.to_string(), source }),
        }
    }
    let source = refused.unwrap_or(SecureError::HandshakeMessage("no server key pinned"));
    Err(Error::Handshake { addr: p.addr.to_string(), source })
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, VecDeque<Reply>> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn read_some(reader: &mut Reader) -> Result<()> {
    match reader.fill().await {
        Ok(0) => Err(Error::ConnectionLost("server closed the connection".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::ConnectionLost(e.to_string())),
    }
}

/// Returns why it stopped; "client dropped" when every handle is gone.
async fn write_loop(mut rx: mpsc::Receiver<Pending>, mut writer: Writer, waiters: Waiters) -> String {
    let mut plain = Vec::new();
    let mut replies = Vec::new();
    while let Some(first) = rx.recv().await {
        replies.push(first.reply);
        let second = if first.frame.len() < BATCH_BYTES { rx.try_recv().ok() } else { None };
        let batch: &[u8] = match second {
            // Alone (nothing else waiting, or a batch's worth by itself): sent
            // from its own buffer. Copying it into the batch first was 8% of
            // the client's CPU on 1 MiB SETs.
            None => &first.frame,
            Some(second) => {
                plain.clear();
                plain.extend_from_slice(&first.frame);
                plain.extend_from_slice(&second.frame);
                replies.push(second.reply);
                while plain.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(p) => {
                            plain.extend_from_slice(&p.frame);
                            replies.push(p.reply);
                        }
                        Err(_) => break,
                    }
                }
                &plain
            }
        };
        // Registered before the bytes leave, so no response can beat its waiter.
        lock(&waiters).extend(replies.drain(..));
        if let Err(e) = writer.send(batch).await {
            return e.to_string();
        }
        if plain.capacity() > 4 * BATCH_BYTES {
            plain = Vec::new();
        }
    }
    let _ = writer.get_mut().shutdown().await;
    "client dropped".into()
}

async fn read_loop(mut reader: Reader, waiters: Waiters, max_response_len: usize) -> String {
    loop {
        loop {
            match decode_response(reader.plaintext(), max_response_len) {
                Ok(Some(response)) => {
                    let mut queue = lock(&waiters);
                    let Some(front) = queue.front_mut() else {
                        return "server sent a response nobody asked for".into();
                    };
                    let last = front.take(response);
                    if last.is_some() || front.is_complete() {
                        let done = queue.pop_front();
                        drop(queue);
                        if let Some(waiter) = done {
                            waiter.complete(last);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("bad response: {e}"),
            }
        }
        if let Err(e) = read_some(&mut reader).await {
            return match e {
                Error::ConnectionLost(reason) => reason,
                other => other.to_string(),
            };
        }
    }
}
