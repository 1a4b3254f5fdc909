//! Response encoding and decoding (layout in the [module docs](super)).

use bytes::{Buf, Bytes, BytesMut};

use super::{FrameError, MAGIC, RESPONSE_HEADER_LEN};

/// Response status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: no such key, or a SETNX/SETXX condition was not met.
    NotFound = 0,
    /// 1: success.
    Ok = 1,
    /// 2: error; the body is `CODE message`.
    Error = 2,
}

impl Status {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::NotFound),
            1 => Some(Self::Ok),
            2 => Some(Self::Error),
            _ => None,
        }
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status.
    pub status: Status,
    /// Body; its meaning depends on the command.
    pub body: Bytes,
}

/// One MGET answer: the value, or `None` for a missing key.
pub type MGetItem = Option<Bytes>;

impl Response {
    /// OK with a body.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self { status: Status::Ok, body: body.into() }
    }

    /// OK with no body.
    pub fn ok_empty() -> Self {
        Self::ok(Bytes::new())
    }

    /// Status 0.
    pub fn not_found() -> Self {
        Self { status: Status::NotFound, body: Bytes::new() }
    }

    /// An error with a Redis-style code (`ERR`, `NOAUTH`, ...).
    pub fn error(code: &str, message: &str) -> Self {
        Self { status: Status::Error, body: Bytes::from(format!("{code} {message}")) }
    }

    /// Splits an error body into (code, message).
    pub fn error_parts(&self) -> Option<(String, String)> {
        if self.status != Status::Error {
            return None;
        }
        let text = String::from_utf8_lossy(&self.body);
        Some(match text.split_once(' ') {
            Some((code, msg)) => (code.to_string(), msg.to_string()),
            None => (text.to_string(), String::new()),
        })
    }

    /// Encodes an MGET item list as an OK body. The caller bounds the item
    /// count and total size (the server by its limits), so lengths fit a u32.
    #[allow(clippy::cast_possible_truncation)]
    pub fn mget<V: AsRef<[u8]>>(items: &[Option<V>]) -> Self {
        let len = 4 + items.iter().map(|i| 5 + i.as_ref().map_or(0, |v| v.as_ref().len())).sum::<usize>();
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for item in items {
            match item.as_ref().map(AsRef::as_ref) {
                Some(v) => {
                    body.push(1);
                    body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => {
                    body.push(0);
                    body.extend_from_slice(&0u32.to_be_bytes());
                }
            }
        }
        Self::ok(body)
    }

    /// A SCAN page: `next_cursor`, then a key list whose count may be 0.
    pub fn scan<K: AsRef<[u8]>>(next_cursor: u64, keys: &[K]) -> Self {
        let len = 12 + keys.iter().map(|k| 2 + k.as_ref().len()).sum::<usize>();
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(&next_cursor.to_be_bytes());
        body.extend_from_slice(&(keys.len() as u32).to_be_bytes());
        for key in keys {
            let key = key.as_ref();
            // Stored keys passed the key limit, at most 65,535 bytes.
            body.extend_from_slice(&(key.len() as u16).to_be_bytes());
            body.extend_from_slice(key);
        }
        Self::ok(body)
    }

    /// Decodes a SCAN page body: the next cursor (0 = done) and the keys.
    ///
    /// # Errors
    /// [`MalformedReply`] naming the first malformed part.
    pub fn parse_scan(&self) -> Result<(u64, Vec<Bytes>), MalformedReply> {
        let mut body = self.body.clone();
        if body.remaining() < 12 {
            return Err(MalformedReply::Scan("is shorter than its cursor and count"));
        }
        let cursor = body.get_u64();
        let count = body.get_u32() as usize;
        if count.saturating_mul(2) > body.remaining() {
            return Err(MalformedReply::Scan("count does not fit its body"));
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            if body.remaining() < 2 {
                return Err(MalformedReply::Scan("key length runs past the end"));
            }
            let len = usize::from(body.get_u16());
            if body.remaining() < len {
                return Err(MalformedReply::Scan("key runs past the end"));
            }
            keys.push(body.split_to(len));
        }
        if body.has_remaining() {
            return Err(MalformedReply::Scan("has trailing bytes"));
        }
        Ok((cursor, keys))
    }

    /// Decodes an MGET item list body.
    ///
    /// # Errors
    /// [`MalformedReply`] naming the first malformed part.
    pub fn parse_mget(&self) -> Result<Vec<MGetItem>, MalformedReply> {
        let mut body = self.body.clone();
        if body.remaining() < 4 {
            return Err(MalformedReply::MGet("is missing its count"));
        }
        let count = body.get_u32() as usize;
        if count.saturating_mul(5) > body.remaining() {
            return Err(MalformedReply::MGet("count does not fit its body"));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            if body.remaining() < 5 {
                return Err(MalformedReply::MGet("item header runs past the end"));
            }
            let present = body.get_u8();
            let len = body.get_u32() as usize;
            if body.remaining() < len {
                return Err(MalformedReply::MGet("value runs past the end"));
            }
            let value = body.split_to(len);
            items.push(match present {
                0 => None,
                1 => Some(value),
                _ => return Err(MalformedReply::MGet("item status is neither 0 nor 1")),
            });
        }
        if body.has_remaining() {
            return Err(MalformedReply::MGet("has trailing bytes"));
        }
        Ok(items)
    }
}

/// Appends a response header for a body of `body_len` bytes.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body does not fit the u32 length.
pub fn encode_response_header(status: Status, body_len: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(body_len).map_err(|_| FrameError::TooLarge {
        what: "response",
        len: body_len,
        limit: u32::MAX as usize,
    })?;
    out.extend_from_slice(&MAGIC);
    out.push(status as u8);
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends the encoding of `response` to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body does not fit the u32 length.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.reserve(RESPONSE_HEADER_LEN + response.body.len());
    encode_response_header(response.status, response.body.len(), out)?;
    out.extend_from_slice(&response.body);
    Ok(())
}

/// Decodes the response at the front of `buf`, removing its bytes; `Ok(None)`
/// while incomplete. `max_body` is checked before the body is awaited.
///
/// # Errors
/// [`FrameError`] for a bad magic, an unknown status or a body over `max_body`.
pub fn decode_response(buf: &mut BytesMut, max_body: usize) -> Result<Option<Response>, FrameError> {
    if buf.len() < RESPONSE_HEADER_LEN {
        return Ok(None);
    }
    let magic = [buf[0], buf[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let status = Status::from_byte(buf[2]).ok_or(FrameError::BadStatus(buf[2]))?;
    let len = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if len > max_body {
        return Err(FrameError::TooLarge { what: "response body", len, limit: max_body });
    }
    if buf.len() < RESPONSE_HEADER_LEN + len {
        // No reserve for the declared length: a peer could make every
        // connection allocate the maximum by sending headers alone.
        return Ok(None);
    }
    buf.advance(RESPONSE_HEADER_LEN);
    let body = buf.split_to(len).freeze();
    Ok(Some(Response { status, body }))
}

/// A reply whose body does not have the layout its command promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReply {
    /// An MGET item list that does not parse.
    #[error("MGET reply {0}")]
    MGet(&'static str),
    /// A SCAN page that does not parse.
    #[error("SCAN reply {0}")]
    Scan(&'static str),
}
