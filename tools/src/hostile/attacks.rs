//! One hostile connection of each kind, and how it ended.
//!
//! Every attack runs until the server ends it or the run's end, whichever
//! comes first, and reports one outcome label; labels are counted per kind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cryptomem_wire::protocol::{Request, decode_response, encode_request};
use cryptomem_wire::secure::handshake::PREAMBLE;
use cryptomem_wire::secure::{ChannelReader, RejectReason, SecureError, channel, client_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use x25519_dalek::PublicKey;

/// The kinds of hostile connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends a valid handshake opening one byte per second.
    Slow,
    /// Opens with 1 to 4096 random bytes.
    Garbage,
    /// Completes the handshake, then sends random bytes as records.
    GarbageRecords,
    /// Authenticates, announces a large SET and sends its value slowly.
    BigValue,
    /// Completes the handshake and sends AUTH with a wrong token.
    WrongAuth,
}

/// What every attack needs.
#[derive(Debug)]
pub struct Ctx {
    pub addr: SocketAddr,
    pub server_key: PublicKey,
    pub token: Bytes,
    /// When the run ends: every attack has stopped by then.
    pub end: Instant,
    /// The SET frame (header and value) big-value attacks trickle.
    pub big_frame: Arc<Vec<u8>>,
    /// Bytes per second a big-value attack sends.
    pub trickle_rate: usize,
}

/// Runs one attack of `kind`; returns its outcome label.
pub async fn run(kind: Kind, ctx: Arc<Ctx>, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stream = match connect(ctx.addr, kind).await {
        Ok(s) => s,
        Err(e) => return format!("connect failed: {}", e.kind()),
    };
    match kind {
        Kind::Idle => opening_reply(&mut stream, ctx.end).await,
        Kind::Slow => slow_opening(stream, &ctx).await,
        Kind::Garbage => {
            let garbage: Vec<u8> = (0..rng.usize(1..=4096)).map(|_| rng.u8(..)).collect();
            if stream.write_all(&garbage).await.is_err() {
                return "closed by server".into();
            }
            opening_reply(&mut stream, ctx.end).await
        }
        Kind::GarbageRecords => match client_handshake(&mut stream, &ctx.server_key).await {
            Ok(keys) => {
                let garbage: Vec<u8> = (0..rng.usize(1..=8192)).map(|_| rng.u8(..)).collect();
                let (read, mut write) = stream.into_split();
                if write.write_all(&garbage).await.is_err() {
                    return "closed by server".into();
                }
                let (reader, _writer) = channel(read, write, keys);
                replies(reader, ctx.end).await
            }
            Err(e) => handshake_failed(&e),
        },
        Kind::BigValue => big_value(stream, &ctx).await,
        Kind::WrongAuth => match client_handshake(&mut stream, &ctx.server_key).await {
            Ok(keys) => {
                let (read, write) = stream.into_split();
                let (reader, mut writer) = channel(read, write, keys);
                let mut frame = Vec::new();
                let auth = Request::Auth { token: wrong_token(&mut rng, &ctx.token) };
                if encode_request(&auth, &mut frame).is_err() || writer.send(&frame).await.is_err() {
                    return "closed by server".into();
                }
                replies(reader, ctx.end).await
            }
            Err(e) => handshake_failed(&e),
        },
    }
}

/// A well-formed token that is not valid: half the time the real token's id
/// with another secret (the server must run argon2 on it), otherwise an
/// unknown id.
fn wrong_token(rng: &mut fastrand::Rng, real: &[u8]) -> Bytes {
    let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
        (0..n).map(|_| char::from_digit(rng.u32(..16), 16).unwrap_or('0')).collect()
    };
    let real_id = std::str::from_utf8(real).ok().and_then(|t| t.split('_').nth(1)).filter(|_| rng.bool());
    let id = real_id.map_or_else(|| hex(rng, 12), str::to_string);
    Bytes::from(format!("cmt_{id}_{}", hex(rng, 64)))
}

/// Connects from a loopback address of the attack's own where the server
/// is on IPv4 loopback (Linux answers on all of 127.0.0.0/8): the server's
/// per-address AUTH lockout then stops the wrong AUTHs, as it would an
/// attacker elsewhere, without locking out the honest client on 127.0.0.1.
async fn connect(addr: SocketAddr, kind: Kind) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else { return TcpStream::connect(addr).await };
    if !v4.ip().is_loopback() {
        return TcpStream::connect(addr).await;
    }
    let socket = tokio::net::TcpSocket::new_v4()?;
    let source = if kind == Kind::WrongAuth { [127, 0, 0, 3] } else { [127, 0, 0, 2] };
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(addr).await
}

fn handshake_failed(e: &SecureError) -> String {
    match e {
        SecureError::Rejected(Some(reason)) => format!("rejected: {}", reason_name(*reason)),
        SecureError::Io(_) => "closed by server during the handshake".into(),
        other => format!("handshake failed: {other}"),
    }
}

fn reason_name(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnsupportedPreamble => "unsupported preamble",
        RejectReason::HandshakeFailed => "handshake failed",
        RejectReason::Busy => "busy (connection limit)",
        RejectReason::BadLength => "bad handshake length",
    }
}

/// What the server answers to an unfinished or garbled opening: a
/// rejection (`0 0 reason`), a plain close, or nothing until `end`.
async fn opening_reply(stream: &mut TcpStream, end: Instant) -> String {
    opening_reply_after(stream, Vec::new(), end).await
}

/// [`opening_reply`] when `got` was already read.
async fn opening_reply_after(stream: &mut TcpStream, mut got: Vec<u8>, end: Instant) -> String {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(end.into(), stream.read(&mut buf)).await {
            Err(_) => return "open at the end".into(),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() > 1024 {
                    return "unexpected bytes".into();
                }
            }
        }
    }
    match got.as_slice() {
        [] => "closed by server".into(),
        [0, 0, r] => {
            let reason = [
                RejectReason::UnsupportedPreamble,
                RejectReason::HandshakeFailed,
                RejectReason::Busy,
                RejectReason::BadLength,
            ]
            .into_iter()
            .find(|reason| *reason as u8 == *r);
            reason.map_or_else(|| format!("rejected: unknown reason {r}"), |r| format!("rejected: {}", reason_name(r)))
        }
        _ => "unexpected bytes".into(),
    }
}

/// Sends a valid opening (preamble, length, message 1 bytes) one byte per
/// second: the handshake deadline should end it.
async fn slow_opening(mut stream: TcpStream, ctx: &Ctx) -> String {
    let mut opening = PREAMBLE.to_vec();
    opening.extend_from_slice(&48u16.to_be_bytes());
    opening.extend((0..48).map(|_| fastrand::u8(..)));
    let mut buf = [0u8; 256];
    for byte in opening {
        if Instant::now() + Duration::from_secs(1) >= ctx.end {
            return "open at the end".into();
        }
        if stream.write_all(&[byte]).await.is_err() {
            return "closed by server".into();
        }
        // Between bytes, notice at once if the server hangs up or rejects.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            read = stream.read(&mut buf) => return match read {
                Ok(0) | Err(_) => "closed by server".into(),
                Ok(n) => opening_reply_after(&mut stream, buf[..n].to_vec(), ctx.end).await,
            },
        }
    }
    opening_reply(&mut stream, ctx.end).await
}

/// Authenticates, then trickles the big SET frame at `trickle_rate` bytes
/// per second until the server answers or closes.
async fn big_value(mut stream: TcpStream, ctx: &Ctx) -> String {
    let keys = match client_handshake(&mut stream, &ctx.server_key).await {
        Ok(keys) => keys,
        Err(e) => return handshake_failed(&e),
    };
    let (read, write) = stream.into_split();
    let (mut reader, mut writer) = channel(read, write, keys);
    let mut frame = Vec::new();
    if encode_request(&Request::Auth { token: ctx.token.clone() }, &mut frame).is_err()
        || writer.send(&frame).await.is_err()
    {
        return "closed by server".into();
    }
    match next_reply(&mut reader, ctx.end).await {
        Reply::Code(code) if code == "OK" => {}
        Reply::Code(code) => return format!("AUTH answered {code}"),
        Reply::Closed => return "closed by server".into(),
        Reply::Open => return "open at the end".into(),
    }
    let chunk = ctx.trickle_rate.max(1);
    let sending = async {
        for piece in ctx.big_frame.chunks(chunk) {
            if writer.send(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = sending => "open at the end".into(),
        label = replies(reader, ctx.end) => label,
    }
}

enum Reply {
    Code(String),
    Closed,
    Open,
}

async fn next_reply(reader: &mut ChannelReader<OwnedReadHalf>, end: Instant) -> Reply {
    loop {
        match decode_response(reader.plaintext(), 1 << 20) {
            Ok(Some(r)) => return Reply::Code(r.error_parts().map_or_else(|| "OK".to_string(), |(code, _)| code)),
            Ok(None) => {}
            Err(_) => return Reply::Code("undecodable reply".into()),
        }
        match tokio::time::timeout_at(end.into(), reader.fill()).await {
            Err(_) => return Reply::Open,
            Ok(Ok(0) | Err(_)) => return Reply::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// The replies until the server closes (or `end`), as one label.
async fn replies(mut reader: ChannelReader<OwnedReadHalf>, end: Instant) -> String {
    let mut codes: Vec<String> = Vec::new();
    loop {
        match next_reply(&mut reader, end).await {
            Reply::Code(code) => {
                codes.push(code);
                if codes.len() > 8 {
                    return format!("answered {}, kept answering", codes.join(" "));
                }
            }
            Reply::Closed if codes.is_empty() => return "closed by server".into(),
            Reply::Closed => return format!("answered {}, closed", codes.join(" ")),
            Reply::Open if codes.is_empty() => return "open at the end".into(),
            Reply::Open => return format!("answered {}, open at the end", codes.join(" ")),
        }
    }
}
