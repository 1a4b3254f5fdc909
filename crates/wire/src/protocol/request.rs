//! Request encoding and decoding (layout in the [module docs](super)).

use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use super::{Command, FrameError, Limits, MAGIC, MAX_TOKEN_LEN, REQUEST_HEADER_LEN, RequestError, command, commands};
use crate::Role;

/// When a SET writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always (SET).
    #[default]
    Always,
    /// Only if the key does not exist (SETNX).
    IfAbsent,
    /// Only if the key exists (SETXX).
    IfPresent,
}

/// One decoded request. Keys and values share the receive buffer (no copies).
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// PING with an optional message to echo.
    Ping {
        /// Echoed back; empty means `PONG`.
        message: Bytes,
    },
    /// AUTH with a token.
    Auth {
        /// The token text; never printed by `Debug`.
        token: Bytes,
    },
    /// GET.
    Get {
        /// Key.
        key: Bytes,
    },
    /// SET, SETNX, SETXX.
    Set {
        /// Key.
        key: Bytes,
        /// Value (opaque ciphertext for the server).
        value: Bytes,
        /// Time to live; `None` keeps the key forever.
        ttl: Option<Duration>,
        /// Write condition.
        condition: SetCondition,
    },
    /// DELETE.
    Delete {
        /// Key.
        key: Bytes,
    },
    /// EXISTS.
    Exists {
        /// Key.
        key: Bytes,
    },
    /// EXPIRE.
    Expire {
        /// Key.
        key: Bytes,
        /// New time to live, > 0.
        ttl: Duration,
    },
    /// PERSIST.
    Persist {
        /// Key.
        key: Bytes,
    },
    /// TTL.
    Ttl {
        /// Key.
        key: Bytes,
    },
    /// MGET.
    MGet {
        /// Keys, in answer order.
        keys: Vec<Bytes>,
    },
    /// MSET.
    MSet {
        /// (key, value) pairs, applied in order.
        pairs: Vec<(Bytes, Bytes)>,
        /// Time to live for every pair.
        ttl: Option<Duration>,
    },
    /// DBSIZE.
    DbSize,
    /// INFO.
    Info,
    /// SAVE: take a snapshot now.
    Save,
    /// TOKEN ADD: create a token.
    TokenAdd {
        /// Its role.
        role: Role,
        /// Its key prefixes (empty: every key).
        prefixes: Vec<String>,
        /// Its label.
        label: String,
    },
    /// TOKEN LIST.
    TokenList,
    /// TOKEN REVOKE.
    TokenRevoke {
        /// The token's id.
        id: String,
    },
    /// CONFIG GET: a run-time setting's value.
    ConfigGet {
        /// The setting (`maxmemory`, `maxmemory-policy`, `maxmemory-samples`).
        name: String,
    },
    /// CONFIG SET: change a run-time setting.
    ConfigSet {
        /// The setting.
        name: String,
        /// Its new value, as the flag takes it.
        value: String,
    },
    /// GETV: the value and its version.
    GetVersioned {
        /// Key.
        key: Bytes,
    },
    /// SETV: SET only if the key's version is `version` (0: absent).
    SetIfVersion {
        /// Key.
        key: Bytes,
        /// Value (opaque ciphertext for the server).
        value: Bytes,
        /// Time to live; `None` keeps the key forever.
        ttl: Option<Duration>,
        /// The version the key must have.
        version: u64,
    },
    /// DELETEV: DELETE only if the key's version is `version`.
    DeleteIfVersion {
        /// Key.
        key: Bytes,
        /// The version the key must have (0: absent, which deletes nothing).
        version: u64,
    },
    /// SCAN: a page of keys from a point-in-time view.
    Scan {
        /// 0 to start; else the `next_cursor` of the previous page.
        cursor: u64,
        /// Most keys in the page.
        count: u32,
        /// Only keys starting with this (empty: every key).
        prefix: Bytes,
    },
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth { .. } => f.write_str("Auth { token: <redacted> }"),
            Self::Ping { message } => write!(f, "Ping({} bytes)", message.len()),
            Self::Get { key } => write!(f, "Get({key:?})"),
            Self::Set { key, value, ttl, condition } => {
                write!(f, "Set({key:?}, {} bytes, ttl {ttl:?}, {condition:?})", value.len())
            }
            Self::Delete { key } => write!(f, "Delete({key:?})"),
            Self::Exists { key } => write!(f, "Exists({key:?})"),
            Self::Expire { key, ttl } => write!(f, "Expire({key:?}, {ttl:?})"),
            Self::Persist { key } => write!(f, "Persist({key:?})"),
            Self::Ttl { key } => write!(f, "Ttl({key:?})"),
            Self::MGet { keys } => write!(f, "MGet({} keys)", keys.len()),
            Self::MSet { pairs, ttl } => write!(f, "MSet({} pairs, ttl {ttl:?})", pairs.len()),
            Self::DbSize => f.write_str("DbSize"),
            Self::Info => f.write_str("Info"),
            Self::Save => f.write_str("Save"),
            Self::TokenAdd { role, prefixes, label } => write!(f, "TokenAdd({role:?}, {prefixes:?}, {label:?})"),
            Self::TokenList => f.write_str("TokenList"),
            Self::TokenRevoke { id } => write!(f, "TokenRevoke({id})"),
            Self::ConfigGet { name } => write!(f, "ConfigGet({name})"),
            Self::ConfigSet { name, value } => write!(f, "ConfigSet({name} = {value})"),
            Self::Scan { cursor, count, prefix } => write!(f, "Scan({cursor}, {count}, {prefix:?})"),
            Self::GetVersioned { key } => write!(f, "GetVersioned({key:?})"),
            Self::SetIfVersion { key, value, ttl, version } => {
                write!(f, "SetIfVersion({key:?}, {} bytes, ttl {ttl:?}, version {version})", value.len())
            }
            Self::DeleteIfVersion { key, version } => write!(f, "DeleteIfVersion({key:?}, version {version})"),
        }
    }
}

impl Request {
    /// Whether the command can change the keyspace.
    pub fn is_write(&self) -> bool {
        self.command().writes
    }

    /// The command's name as users know it.
    pub fn name(&self) -> &'static str {
        self.command().name
    }

    /// This request's row of the command table ([`commands`]).
    pub fn command(&self) -> Command {
        match self {
            Self::Ping { .. } => commands::PING,
            Self::Auth { .. } => commands::AUTH,
            Self::Get { .. } => commands::GET,
            Self::Set { condition, .. } => set_command(*condition),
            Self::Delete { .. } => commands::DELETE,
            Self::Exists { .. } => commands::EXISTS,
            Self::Expire { .. } => commands::EXPIRE,
            Self::Persist { .. } => commands::PERSIST,
            Self::Ttl { .. } => commands::TTL,
            Self::MGet { .. } => commands::MGET,
            Self::MSet { .. } => commands::MSET,
            Self::DbSize => commands::DBSIZE,
            Self::Info => commands::INFO,
            Self::Save => commands::SAVE,
            Self::TokenAdd { .. } => commands::TOKEN_ADD,
            Self::TokenList => commands::TOKEN_LIST,
            Self::TokenRevoke { .. } => commands::TOKEN_REVOKE,
            Self::ConfigGet { .. } => commands::CONFIG_GET,
            Self::ConfigSet { .. } => commands::CONFIG_SET,
            Self::Scan { .. } => commands::SCAN,
            Self::GetVersioned { .. } => commands::GETV,
            Self::SetIfVersion { .. } => commands::SETV,
            Self::DeleteIfVersion { .. } => commands::DELETEV,
        }
    }
}

/// What [`decode_request`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A valid request.
    Request(Request),
    /// A well-framed request that breaks a rule; answer with this error.
    Rejected(RequestError),
}

/// Decodes the request at the front of `buf`, removing its bytes.
///
/// Returns `Ok(None)` while the request is incomplete; lengths are checked
/// against `limits` from the header alone, before waiting for or allocating
/// the body.
///
/// # Errors
/// [`FrameError`] when the stream cannot be framed any more (bad magic, value
/// over the limit); the connection must close.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Decoded>, FrameError> {
    if buf.len() < REQUEST_HEADER_LEN {
        return Ok(None);
    }
    let magic = [buf[0], buf[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let code = buf[2];
    let key_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let val_len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    let ttl = i64::from_be_bytes([buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15], buf[16]]);
    if val_len > limits.max_value_len {
        return Err(FrameError::TooLarge { what: "value", len: val_len, limit: limits.max_value_len });
    }
    let total = REQUEST_HEADER_LEN + key_len + val_len;
    if buf.len() < total {
        // No reserve for the declared length: a peer could make every
        // connection allocate the maximum by sending headers alone.
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let key = frame.slice(REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + key_len);
    let value = frame.slice(REQUEST_HEADER_LEN + key_len..);
    Ok(Some(match parse_command(code, key, value, ttl, limits) {
        Ok(request) => Decoded::Request(request),
        Err(msg) => Decoded::Rejected(RequestError(msg)),
    }))
}

fn parse_command(code: u8, key: Bytes, value: Bytes, ttl: i64, limits: &Limits) -> Result<Request, String> {
    let fields = Fields { key, value, ttl, limits };
    Ok(match code {
        command::SET | command::SETNX | command::SETXX => {
            let condition = match code {
                command::SETNX => SetCondition::IfAbsent,
                command::SETXX => SetCondition::IfPresent,
                _ => SetCondition::Always,
            };
            Request::Set { ttl: fields.optional_ttl()?, key: fields.key()?, value: fields.value, condition }
        }
        command::GET => Request::Get { key: fields.key_only()? },
        command::DELETE => Request::Delete { key: fields.key_only()? },
        command::EXISTS => Request::Exists { key: fields.key_only()? },
        command::PERSIST => Request::Persist { key: fields.key_only()? },
        command::TTL => Request::Ttl { key: fields.key_only()? },
        command::EXPIRE => {
            let ttl = fields.optional_ttl()?.ok_or("EXPIRE needs a ttl > 0")?;
            fields.no_value()?;
            Request::Expire { key: fields.key()?, ttl }
        }
        command::PING => {
            fields.no_key()?;
            fields.no_ttl()?;
            Request::Ping { message: fields.value }
        }
        command::AUTH => {
            fields.no_key()?;
            fields.no_ttl()?;
            if fields.value.is_empty() || fields.value.len() > MAX_TOKEN_LEN {
                return Err(format!("AUTH needs a token of 1..={MAX_TOKEN_LEN} bytes"));
            }
            Request::Auth { token: fields.value }
        }
        command::MGET => {
            fields.no_key()?;
            fields.no_ttl()?;
            Request::MGet { keys: parse_key_list(fields.value, limits)? }
        }
        command::MSET => {
            fields.no_key()?;
            let ttl = fields.optional_ttl()?;
            Request::MSet { pairs: parse_pair_list(fields.value, limits)?, ttl }
        }
        command::DBSIZE | command::INFO | command::SAVE => {
            fields.no_key()?;
            fields.no_value()?;
            fields.no_ttl()?;
            match code {
                command::DBSIZE => Request::DbSize,
                command::INFO => Request::Info,
                _ => Request::Save,
            }
        }
        command::TOKEN_ADD => {
            fields.no_ttl()?;
            let role: Role = std::str::from_utf8(&fields.key)
                .ok()
                .and_then(|r| r.parse().ok())
                .ok_or("TOKEN ADD needs a role of read, write or admin as its key")?;
            let (label, prefixes) = parse_token_spec(fields.value)?;
            Request::TokenAdd { role, prefixes, label }
        }
        command::TOKEN_LIST => {
            fields.no_key()?;
            fields.no_value()?;
            fields.no_ttl()?;
            Request::TokenList
        }
        command::TOKEN_REVOKE => {
            fields.no_value()?;
            fields.no_ttl()?;
            let id = std::str::from_utf8(&fields.key).map_err(|_| "TOKEN REVOKE needs a token id as its key")?;
            if id.is_empty() || id.len() > 64 {
                return Err("TOKEN REVOKE needs a token id as its key".into());
            }
            Request::TokenRevoke { id: id.to_string() }
        }
        command::CONFIG_GET => {
            fields.no_value()?;
            fields.no_ttl()?;
            Request::ConfigGet { name: setting_name(&fields.key)? }
        }
        command::CONFIG_SET => {
            fields.no_ttl()?;
            let value = std::str::from_utf8(&fields.value).map_err(|_| "CONFIG SET needs a UTF-8 value")?;
            if value.len() > 256 {
                return Err("CONFIG SET values are at most 256 bytes".into());
            }
            Request::ConfigSet { name: setting_name(&fields.key)?, value: value.to_string() }
        }
        command::GETV => Request::GetVersioned { key: fields.key_only()? },
        command::SETV => {
            let mut value = fields.value.clone();
            if value.len() < 8 {
                return Err("SETV needs the version (u64) ahead of the value".into());
            }
            let version = value.get_u64();
            Request::SetIfVersion { ttl: fields.optional_ttl()?, key: fields.key()?, value, version }
        }
        command::DELETEV => {
            fields.no_ttl()?;
            let mut value = fields.value.clone();
            if value.len() != 8 {
                return Err("DELETEV needs the version, 8 bytes, as its value".into());
            }
            Request::DeleteIfVersion { key: fields.key()?, version: value.get_u64() }
        }
        command::SCAN => {
            fields.no_ttl()?;
            if fields.key.len() > fields.limits.max_key_len {
                return Err(format!("SCAN prefix of {} bytes exceeds the key limit", fields.key.len()));
            }
            let mut value = fields.value.clone();
            if value.len() != 12 {
                return Err("SCAN needs a 12-byte value: cursor u64, count u32".into());
            }
            let cursor = value.get_u64();
            let count = value.get_u32();
            if count == 0 || count as usize > fields.limits.max_batch_keys {
                return Err(format!("SCAN count {count} is outside 1..={}", fields.limits.max_batch_keys));
            }
            Request::Scan { cursor, count, prefix: fields.key.clone() }
        }
        other => return Err(format!("unknown command code {other}")),
    })
}

struct Fields<'a> {
    key: Bytes,
    value: Bytes,
    ttl: i64,
    limits: &'a Limits,
}

impl Fields<'_> {
    fn key(&self) -> Result<Bytes, String> {
        check_key(&self.key, self.limits)?;
        Ok(self.key.clone())
    }
    fn key_only(&self) -> Result<Bytes, String> {
        self.no_value()?;
        self.no_ttl()?;
        self.key()
    }
    fn no_key(&self) -> Result<(), String> {
        if self.key.is_empty() { Ok(()) } else { Err("this command takes no key".into()) }
    }
    fn no_value(&self) -> Result<(), String> {
        if self.value.is_empty() { Ok(()) } else { Err("this command takes no value".into()) }
    }
    fn no_ttl(&self) -> Result<(), String> {
        if self.ttl == 0 { Ok(()) } else { Err("this command takes no ttl".into()) }
    }
    fn optional_ttl(&self) -> Result<Option<Duration>, String> {
        match self.ttl {
            0 => Ok(None),
            t if t < 0 => Err(format!("ttl {t} is negative")),
            t => Ok(Some(Duration::from_nanos(t.unsigned_abs()))),
        }
    }
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".into());
    }
    if key.len() > limits.max_key_len {
        return Err(format!("key of {} bytes exceeds the limit of {}", key.len(), limits.max_key_len));
    }
    Ok(())
}

fn read_count(list: &mut Bytes, limits: &Limits, min_entry: usize) -> Result<usize, String> {
    if list.remaining() < 4 {
        return Err("list is missing its count".into());
    }
    let count = list.get_u32() as usize;
    if count == 0 || count > limits.max_batch_keys {
        return Err(format!("list count {count} is outside 1..={}", limits.max_batch_keys));
    }
    if count.saturating_mul(min_entry) > list.remaining() {
        return Err(format!("list count {count} does not fit the {} bytes that follow", list.remaining()));
    }
    Ok(count)
}

fn take(list: &mut Bytes, len: usize, what: &str) -> Result<Bytes, String> {
    if list.remaining() < len {
        return Err(format!("list entry {what} runs past the end"));
    }
    Ok(list.split_to(len))
}

fn parse_key_list(mut list: Bytes, limits: &Limits) -> Result<Vec<Bytes>, String> {
    let count = read_count(&mut list, limits, 2 + 1)?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(take(&mut list, 2, "length")?.get_u16());
        let key = take(&mut list, len, "key")?;
        check_key(&key, limits)?;
        keys.push(key);
    }
    if list.has_remaining() {
        return Err("trailing bytes after the key list".into());
    }
    Ok(keys)
}

fn parse_pair_list(mut list: Bytes, limits: &Limits) -> Result<Vec<(Bytes, Bytes)>, String> {
    let count = read_count(&mut list, limits, 2 + 4 + 1)?;
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = usize::from(take(&mut list, 2, "key length")?.get_u16());
        let val_len = take(&mut list, 4, "value length")?.get_u32() as usize;
        let key = take(&mut list, key_len, "key")?;
        check_key(&key, limits)?;
        let value = take(&mut list, val_len, "value")?;
        pairs.push((key, value));
    }
    if list.has_remaining() {
        return Err("trailing bytes after the pair list".into());
    }
    Ok(pairs)
}

/// A TOKEN ADD value: `label_len: u16`, label (UTF-8), then a key list of
/// prefixes (UTF-8) whose count may be zero.
fn parse_token_spec(mut value: Bytes) -> Result<(String, Vec<String>), String> {
    let text =
        |b: Bytes, what: &str| String::from_utf8(b.to_vec()).map_err(|_| format!("TOKEN ADD {what} is not UTF-8"));
    let label_len = usize::from(take(&mut value, 2, "label length")?.get_u16());
    let label = text(take(&mut value, label_len, "label")?, "label")?;
    let count = take(&mut value, 4, "prefix count")?.get_u32() as usize;
    if count > 64 {
        return Err("TOKEN ADD takes at most 64 prefixes".into());
    }
    let mut prefixes = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(take(&mut value, 2, "prefix length")?.get_u16());
        prefixes.push(text(take(&mut value, len, "prefix")?, "prefix")?);
    }
    if value.has_remaining() {
        return Err("trailing bytes after the TOKEN ADD prefixes".into());
    }
    Ok((label, prefixes))
}

/// Appends the encoding of `request` to `out`.
///
/// # Errors
/// [`FrameError::TooLarge`] when a key or value does not fit its length field.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let none: &[u8] = &[];
    let code = request.command().code;
    let ttl_ns = |ttl: Option<Duration>| ttl.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX).max(1));
    match request {
        Request::Ping { message } => write_frame(out, code, none, message, 0),
        Request::Auth { token } => write_frame(out, code, none, token, 0),
        Request::Get { key } => write_frame(out, code, key, none, 0),
        Request::Set { key, value, ttl, .. } => write_frame(out, code, key, value, ttl_ns(*ttl)),
        Request::Delete { key } => write_frame(out, code, key, none, 0),
        Request::Exists { key } => write_frame(out, code, key, none, 0),
        Request::Expire { key, ttl } => write_frame(out, code, key, none, ttl_ns(Some(*ttl))),
        Request::Persist { key } => write_frame(out, code, key, none, 0),
        Request::Ttl { key } => write_frame(out, code, key, none, 0),
        Request::MGet { keys } => {
            let mut list = Vec::with_capacity(4 + keys.iter().map(|k| 2 + k.len()).sum::<usize>());
            list.extend_from_slice(&len_u32(keys.len(), "key count")?.to_be_bytes());
            for key in keys {
                list.extend_from_slice(&len_u16(key.len())?.to_be_bytes());
                list.extend_from_slice(key);
            }
            write_frame(out, code, none, &list, 0)
        }
        Request::MSet { pairs, ttl } => {
            let mut list = Vec::with_capacity(4 + pairs.iter().map(|(k, v)| 6 + k.len() + v.len()).sum::<usize>());
            list.extend_from_slice(&len_u32(pairs.len(), "pair count")?.to_be_bytes());
            for (key, value) in pairs {
                list.extend_from_slice(&len_u16(key.len())?.to_be_bytes());
                list.extend_from_slice(&len_u32(value.len(), "value")?.to_be_bytes());
                list.extend_from_slice(key);
                list.extend_from_slice(value);
            }
            write_frame(out, code, none, &list, ttl_ns(*ttl))
        }
        Request::DbSize => write_frame(out, code, none, none, 0),
        Request::Info => write_frame(out, code, none, none, 0),
        Request::Save => write_frame(out, code, none, none, 0),
        Request::TokenAdd { role, prefixes, label } => {
            let role = role.as_str().as_bytes();
            let mut spec = Vec::new();
            spec.extend_from_slice(&len_u16(label.len())?.to_be_bytes());
            spec.extend_from_slice(label.as_bytes());
            spec.extend_from_slice(&len_u32(prefixes.len(), "prefix count")?.to_be_bytes());
            for p in prefixes {
                spec.extend_from_slice(&len_u16(p.len())?.to_be_bytes());
                spec.extend_from_slice(p.as_bytes());
            }
            write_frame(out, code, role, &spec, 0)
        }
        Request::TokenList => write_frame(out, code, none, none, 0),
        Request::TokenRevoke { id } => write_frame(out, code, id.as_bytes(), none, 0),
        Request::ConfigGet { name } => write_frame(out, code, name.as_bytes(), none, 0),
        Request::ConfigSet { name, value } => write_frame(out, code, name.as_bytes(), value.as_bytes(), 0),
        Request::GetVersioned { key } => write_frame(out, code, key, none, 0),
        Request::SetIfVersion { key, value, ttl, version } => {
            let mut body = Vec::with_capacity(8 + value.len());
            body.extend_from_slice(&version.to_be_bytes());
            body.extend_from_slice(value);
            write_frame(out, code, key, &body, ttl_ns(*ttl))
        }
        Request::DeleteIfVersion { key, version } => write_frame(out, code, key, &version.to_be_bytes(), 0),
        Request::Scan { cursor, count, prefix } => {
            let mut value = [0u8; 12];
            value[..8].copy_from_slice(&cursor.to_be_bytes());
            value[8..].copy_from_slice(&count.to_be_bytes());
            write_frame(out, code, prefix, &value, 0)
        }
    }
}

/// A CONFIG setting name: UTF-8, 1 to 64 bytes (which names exist is the
/// server's business).
fn setting_name(key: &[u8]) -> Result<String, String> {
    match std::str::from_utf8(key) {
        Ok(name) if (1..=64).contains(&name.len()) => Ok(name.to_ascii_lowercase()),
        _ => Err("CONFIG needs a setting name (UTF-8, 1 to 64 bytes) as its key".into()),
    }
}

fn len_u16(len: usize) -> Result<u16, FrameError> {
    u16::try_from(len).map_err(|_| FrameError::TooLarge { what: "key", len, limit: u16::MAX as usize })
}

fn len_u32(len: usize, what: &'static str) -> Result<u32, FrameError> {
    u32::try_from(len).map_err(|_| FrameError::TooLarge { what, len, limit: u32::MAX as usize })
}

fn write_frame(out: &mut Vec<u8>, code: u8, key: &[u8], value: &[u8], ttl_ns: i64) -> Result<(), FrameError> {
    write_head(out, code, key, value.len(), ttl_ns)?;
    out.extend_from_slice(value);
    Ok(())
}

/// A frame up to its value, with room reserved for the value.
fn write_head(out: &mut Vec<u8>, code: u8, key: &[u8], value_len: usize, ttl_ns: i64) -> Result<(), FrameError> {
    let key_len = len_u16(key.len())?;
    let val_len = len_u32(value_len, "value")?;
    out.reserve(REQUEST_HEADER_LEN + key.len() + value_len);
    out.extend_from_slice(&MAGIC);
    out.push(code);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&val_len.to_be_bytes());
    out.extend_from_slice(&ttl_ns.to_be_bytes());
    out.extend_from_slice(key);
    Ok(())
}

/// The command a SET with `condition` is sent as.
fn set_command(condition: SetCondition) -> Command {
    match condition {
        SetCondition::Always => commands::SET,
        SetCondition::IfAbsent => commands::SETNX,
        SetCondition::IfPresent => commands::SETXX,
    }
}

/// Writes a SET request (SET, SETNX or SETXX per `condition`) up to its
/// value: the caller appends exactly `value_len` value bytes to `out`, as
/// [`encode_request`] would have. A client that seals the value straight
/// into the frame this way copies it once fewer than one that seals it into
/// a buffer of its own and encodes a [`Request::Set`].
///
/// # Errors
/// [`FrameError`] for a key or value too long for the frame's fields.
pub fn encode_set_head(
    key: &[u8],
    value_len: usize,
    ttl: Option<Duration>,
    condition: SetCondition,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let ttl_ns = ttl.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX).max(1));
    write_head(out, set_command(condition).code, key, value_len, ttl_ns)
}
