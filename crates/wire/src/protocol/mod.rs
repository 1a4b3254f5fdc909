//! Requests and responses: the plaintext carried inside the encrypted records.
//!
//! Pure encode/decode, no I/O. The layout is the original cryptomem binary
//! protocol, extended with new command codes. All integers are big-endian.
//! The stream of requests (client to server) and of responses (server to
//! client) is carried by [`crate::secure::record`] records; a request may span
//! records and a record may carry many requests.
//!
//! # Request
//!
//! | offset        | size    | field                                             |
//! |--------------:|--------:|---------------------------------------------------|
//! | 0             | 2       | magic `"CM"` (0x43 0x4D)                           |
//! | 2             | 1       | command (table below)                             |
//! | 3             | 2       | `key_len`, u16                                    |
//! | 5             | 4       | `val_len`, u32                                    |
//! | 9             | 8       | `ttl`, i64, nanoseconds; 0 = none                 |
//! | 17            | key_len | key                                               |
//! | 17 + key_len  | val_len | value                                             |
//!
//! # Response
//!
//! | offset | size    | field                                                    |
//! |-------:|--------:|----------------------------------------------------------|
//! | 0      | 2       | magic `"CM"`                                              |
//! | 2      | 1       | status: 0 not found / condition not met, 1 OK, 2 error   |
//! | 3      | 4       | `body_len`, u32                                          |
//! | 7      | body_len| body                                                     |
//!
//! A status-0 response always has an empty body (`body_len` 0). An error
//! body is UTF-8: an upper-case code, a space, and a message, like Redis.
//! Clients should treat an unknown code like `ERR`. After some errors the
//! server closes the connection, after writing the error and every response
//! before it:
//!
//! | code | when | connection |
//! |------|------|------------|
//! | `ERR` | a malformed request (a field that must be empty is not, a key over the key limit, a bad list, a bad TTL, an unknown command) | stays open; **closes** if it was the first request (a malformed AUTH) |
//! | `NOAUTH` | the first request is not AUTH; or the token was revoked since AUTH | closes |
//! | `WRONGPASS` | AUTH with a token that is not valid | closes |
//! | `LOCKED` | AUTH from an address locked out after too many failures | closes |
//! | `BUSY` | AUTH could not be verified in time (the verifiers are saturated), or the server holds too many bytes of incomplete requests (`--request-buffer-limit`) | closes; retry later |
//! | `NOPERM` | the token's role or key prefixes do not allow the command | stays open |
//! | `TOOBIG` | a request's `val_len` is over the value limit: the body is not read | closes |
//! | `TOOBIG` | an MGET whose found values together exceed the value limit (the reply would be too large; nothing else is wrong with the stream) | stays open |
//! | `TIMEOUT` | a request did not arrive in full within `--request-timeout` of its first byte | closes |
//! | `PROTO` | bad magic, or a record that failed authentication (the error follows the answers to every request before it) | closes |
//! | `CONFLICT` | SETV or DELETEV with a version that is not the key's (nothing written) | stays open |
//! | `NOCURSOR` | a SCAN cursor that is unknown, already used, finished, unused for 60 s, or another token's | stays open; start again from cursor 0 |
//! | `IOERR` | the server cannot persist writes: every write is refused while reads keep working (see the README's "A full or failing disk") | stays open |
//!
//! Responses come back in request order, so clients may pipeline: send many
//! requests without waiting, then read the responses in the same order.
//!
//! # Commands
//!
//! "key" means `key_len` >= 1; "-" means the field must be empty/zero, else the
//! request gets an `ERR` response (the connection stays usable).
//!
//! | code | command | key | value | ttl | OK body | status 0 means |
//! |-----:|---------|-----|-------|-----|---------|----------------|
//! | 1  | SET     | key | value (may be empty) | >= 0 | empty | - |
//! | 2  | GET     | key | - | - | the value | no such key |
//! | 3  | DELETE  | key | - | - | empty | no such key |
//! | 4  | PING    | -   | optional message | - | the message, or `PONG` | - |
//! | 5  | AUTH    | -   | token (UTF-8, at most 1024 bytes) | - | empty | - |
//! | 6  | EXISTS  | key | - | - | empty | no such key |
//! | 7  | EXPIRE  | key | - | > 0 | empty | no such key |
//! | 8  | PERSIST | key | - | - | 1 byte: 1 if a TTL was removed, 0 if there was none | no such key |
//! | 9  | TTL     | key | - | - | i64: remaining ns (millisecond precision), -1 if no expiry | no such key |
//! | 10 | MGET    | -   | key list | - | item list | - |
//! | 11 | MSET    | -   | pair list | >= 0, applies to every pair | empty | - |
//! | 12 | DBSIZE  | -   | - | - | u64: number of keys | - |
//! | 13 | INFO    | -   | - | - | UTF-8 `name:value` lines, `# Section` headers | - |
//! | 14 | SETNX   | key | value | >= 0 | empty | key exists (nothing written) |
//! | 15 | SETXX   | key | value | >= 0 | empty | key missing (nothing written) |
//! | 16 | SAVE    | -   | - | - | u64: the snapshot's cut sequence number | - |
//! | 17 | TOKEN ADD | role: `read`, `write` or `admin` | token spec | - | the new token, UTF-8, shown once | - |
//! | 18 | TOKEN LIST | - | - | - | UTF-8 TOML: `[[token]]` tables with `id`, `role`, `prefixes`, `label`, `created_unix_ms` (never hashes) | - |
//! | 19 | TOKEN REVOKE | token id | - | - | empty | no such token |
//! | 20 | CONFIG GET | setting name (`maxmemory`, `maxmemory-policy`, `maxmemory-samples`) | - | - | its value, UTF-8 (`maxmemory` in bytes) | - (an unknown name is `ERR`) |
//! | 21 | CONFIG SET | setting name, as for CONFIG GET | new value, UTF-8 (`512MiB`, `allkeys-lru`, `5`) | - | empty | - (a bad name or value is `ERR`) |
//! | 22 | SCAN | prefix (may be empty: every key) | 12 bytes: `cursor: u64`, `count: u32` (1..=max batch) | - | `next_cursor: u64`, then a key list (count may be 0) | - |
//! | 23 | GETV | key | - | - | `version: u64`, then the value | no such key |
//! | 24 | SETV | key | `version: u64` (0: only if absent), then the value | >= 0 | `version: u64`, the key's new version | - (a different version is `CONFLICT`) |
//! | 25 | DELETEV | key | `version: u64` | - | empty | no such key, and version 0 was given (a different version is `CONFLICT`) |
//!
//! A token spec is `label_len: u16`, the label (UTF-8), then `count: u32`
//! (0..=64) and `count` times (`len: u16`, prefix bytes, UTF-8). SAVE, CONFIG and
//! the TOKEN commands need an admin token; writes need write or admin; a refused
//! command gets `NOPERM` and the connection stays usable (roles table in
//! the server's `auth::permissions`). A token revoked while a connection uses it
//! makes that connection's next request fail with `NOAUTH` and close.
//!
//! A key list is `count: u32` then `count` times (`len: u16`, key bytes).
//! A pair list is `count: u32` then `count` times (`key_len: u16`,
//! `val_len: u32`, key, value). An MGET item list is `count: u32` then, per
//! requested key in order, (`status: u8` 0 missing / 1 present, `len: u32`,
//! value); a missing key's item is status 0 with `len` 0 and no value bytes,
//! so it differs from a present empty value only by its status. Counts are
//! 1..=[`Limits::max_batch_keys`]; every key in a list obeys
//! the key limits. Nothing may follow the last entry of a list.
//!
//! # Versions
//!
//! Every stored key has a version: the sequence number of its last logged
//! change (SET, EXPIRE, PERSIST, any of their variants), never 0, larger
//! after every change, kept across restarts and snapshots. `GETV` reads it
//! with the value; `SETV` and `DELETEV` act only if the key's version is
//! still the one given (0: the key must be absent), else answer `CONFLICT`
//! and change nothing. A client does read-modify-write with no lost update
//! by `GETV`, computing, `SETV` with the version read, and starting over on
//! `CONFLICT`. A key that expired counts as absent.
//!
//! # SCAN
//!
//! `cursor` 0 starts a scan: the server takes a point-in-time view of the
//! keyspace (the shards' persistent maps, shared with the live ones, so
//! taking it copies nothing) and answers the first page with a cursor.
//! Sending a page's `next_cursor` back (with the same prefix) gets the next
//! page, and a new `next_cursor`; each cursor is good for one request.
//! `next_cursor` 0 means the scan is complete. Every key live in the view when its page is built is
//! returned exactly once over the whole scan, whatever is written
//! meanwhile: keys added after the start are never returned, keys deleted
//! after the start still are (they were there), none twice. Keys expired by
//! the time their page is built are skipped. Only keys starting with the
//! prefix, and inside the token's prefixes, are returned.
//!
//! A page holds at most `count` keys and its key list at most the value
//! limit in bytes; the server examines at most `10 * count` keys (at least
//! 1,000) per page, so a page may hold fewer than `count` keys, or none,
//! with a non-zero `next_cursor`. A cursor is bound to the token that
//! started the scan. It costs the server what writes replace or delete
//! while it is open, old items and map nodes alike (nothing while the
//! keyspace does not change, at most a second copy of the keyspace); at
//! most 1,024 are open at once
//! (`BUSY` beyond), and one unused for 60 s is dropped. A cursor that is
//! unknown, already used, finished, dropped or another token's gets
//! `NOCURSOR` (the connection stays usable): start again from 0. The same
//! cursor with another prefix gets `ERR`.
//!
//! TTLs arrive relative (nanoseconds) and are stored as absolute Unix
//! milliseconds, rounded up, so a TTL never expires early.
//!
//! # The first request
//!
//! The first request on a connection must be AUTH. Any other request gets
//! `NOAUTH` and the connection is closed; a failed AUTH gets `WRONGPASS` and the
//! connection is closed; a malformed AUTH (a key, a TTL, an empty or over-long
//! token) gets `ERR` and the connection is closed. AUTH must be answered
//! within the handshake timeout of the handshake's end.
//!
//! A later AUTH on an authenticated connection verifies the new token like the
//! first: if it is valid the connection switches to that token's role and
//! prefixes for every following request; if not, the answer is `WRONGPASS`
//! (or `LOCKED`) and the connection is closed, as for a first AUTH.
//!
//! # Limits (server defaults; configurable)
//!
//! - key: 1..=1024 bytes (hard maximum 65,535, the u16 field);
//! - value field: at most 16 MiB (hard maximum 512 MiB); for MSET the whole pair
//!   list counts against it, and for MGET the whole key list;
//! - batch: at most 10,000 keys per MGET/MSET.
//!
//! A `val_len` over the limit is answered with `TOOBIG` and the connection is
//! closed (the server will not read the body). A bad magic is answered with
//! `PROTO` and closes the connection. Any other malformed request gets an error
//! response and the connection goes on.

mod request;
mod response;

pub use request::{Decoded, Request, SetCondition, decode_request, encode_request, encode_set_head};

#[cfg(test)]
mod table_tests {
    #[test]
    fn codes_run_1_to_25_in_order_with_unique_names() {
        for (i, c) in super::commands::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.code), i + 1, "{}", c.name);
            assert_eq!(super::commands::ALL.iter().filter(|o| o.name == c.name).count(), 1);
        }
    }
}
pub use response::{
    MGetItem, MalformedReply, Response, Status, decode_response, encode_response, encode_response_header,
};

/// Magic at the start of every request and response.
pub const MAGIC: [u8; 2] = *b"CM";
/// Request header length.
pub const REQUEST_HEADER_LEN: usize = 17;
/// Response header length.
pub const RESPONSE_HEADER_LEN: usize = 7;
/// Longest AUTH token accepted.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Hard ceiling for the configurable value limit.
pub const HARD_MAX_VALUE_LEN: usize = 512 * 1024 * 1024;
/// Default value limit.
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 * 1024 * 1024;
/// Default key limit.
pub const DEFAULT_MAX_KEY_LEN: usize = 1024;
/// Default batch limit.
pub const DEFAULT_MAX_BATCH_KEYS: usize = 10_000;

/// Who may run a command: the least role that grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Every role (read, write, admin).
    Read,
    /// Write and admin tokens.
    Write,
    /// Admin tokens only.
    Admin,
}

/// Where the server runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Against the store, inline, in the batch it arrived in.
    Store,
    /// In the session: it waits on argon2 or the disk (AUTH, SAVE, TOKEN *).
    Session,
}

/// Everything the protocol says about one command, stated once: the codec
/// uses the code, permissions the access, the server where it runs, logs and
/// errors the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// The request's command byte.
    pub code: u8,
    /// The name users know it by.
    pub name: &'static str,
    /// Whether it can change the keyspace (and so goes through the log).
    pub writes: bool,
    /// The least role that may run it.
    pub access: Access,
    /// Where the server runs it.
    pub runs: Runs,
}

/// The command table, in code order (codes 1..=25).
pub mod commands {
    use super::{Access, Command, Runs};

    /// SET key value (ttl).
    pub const SET: Command = Command { code: 1, name: "SET", writes: true, access: Access::Write, runs: Runs::Store };
    /// GET key.
    pub const GET: Command = Command { code: 2, name: "GET", writes: false, access: Access::Read, runs: Runs::Store };
    /// DELETE key.
    pub const DELETE: Command =
        Command { code: 3, name: "DELETE", writes: true, access: Access::Write, runs: Runs::Store };
    /// PING (message).
    pub const PING: Command = Command { code: 4, name: "PING", writes: false, access: Access::Read, runs: Runs::Store };
    /// AUTH token.
    pub const AUTH: Command =
        Command { code: 5, name: "AUTH", writes: false, access: Access::Read, runs: Runs::Session };
    /// EXISTS key.
    pub const EXISTS: Command =
        Command { code: 6, name: "EXISTS", writes: false, access: Access::Read, runs: Runs::Store };
    /// EXPIRE key ttl.
    pub const EXPIRE: Command =
        Command { code: 7, name: "EXPIRE", writes: true, access: Access::Write, runs: Runs::Store };
    /// PERSIST key.
    pub const PERSIST: Command =
        Command { code: 8, name: "PERSIST", writes: true, access: Access::Write, runs: Runs::Store };
    /// TTL key.
    pub const TTL: Command = Command { code: 9, name: "TTL", writes: false, access: Access::Read, runs: Runs::Store };
    /// MGET key-list.
    pub const MGET: Command =
        Command { code: 10, name: "MGET", writes: false, access: Access::Read, runs: Runs::Store };
    /// MSET pair-list (ttl).
    pub const MSET: Command =
        Command { code: 11, name: "MSET", writes: true, access: Access::Write, runs: Runs::Store };
    /// DBSIZE.
    pub const DBSIZE: Command =
        Command { code: 12, name: "DBSIZE", writes: false, access: Access::Read, runs: Runs::Store };
    /// INFO.
    pub const INFO: Command =
        Command { code: 13, name: "INFO", writes: false, access: Access::Read, runs: Runs::Store };
    /// SET only if the key does not exist.
    pub const SETNX: Command =
        Command { code: 14, name: "SETNX", writes: true, access: Access::Write, runs: Runs::Store };
    /// SET only if the key exists.
    pub const SETXX: Command =
        Command { code: 15, name: "SETXX", writes: true, access: Access::Write, runs: Runs::Store };
    /// SAVE: snapshot now.
    pub const SAVE: Command =
        Command { code: 16, name: "SAVE", writes: false, access: Access::Admin, runs: Runs::Session };
    /// TOKEN ADD.
    pub const TOKEN_ADD: Command =
        Command { code: 17, name: "TOKEN ADD", writes: false, access: Access::Admin, runs: Runs::Session };
    /// TOKEN LIST.
    pub const TOKEN_LIST: Command =
        Command { code: 18, name: "TOKEN LIST", writes: false, access: Access::Admin, runs: Runs::Session };
    /// TOKEN REVOKE.
    pub const TOKEN_REVOKE: Command =
        Command { code: 19, name: "TOKEN REVOKE", writes: false, access: Access::Admin, runs: Runs::Session };

    /// CONFIG GET name.
    pub const CONFIG_GET: Command =
        Command { code: 20, name: "CONFIG GET", writes: false, access: Access::Admin, runs: Runs::Session };
    /// CONFIG SET name value.
    pub const CONFIG_SET: Command =
        Command { code: 21, name: "CONFIG SET", writes: false, access: Access::Admin, runs: Runs::Session };

    /// SCAN cursor count (prefix): a page of a point-in-time key listing.
    pub const SCAN: Command =
        Command { code: 22, name: "SCAN", writes: false, access: Access::Read, runs: Runs::Session };
    /// GETV key: the value and its version.
    pub const GETV: Command =
        Command { code: 23, name: "GETV", writes: false, access: Access::Read, runs: Runs::Store };
    /// SETV key version+value (ttl): SET only if the key's version is the one given.
    pub const SETV: Command =
        Command { code: 24, name: "SETV", writes: true, access: Access::Write, runs: Runs::Store };
    /// DELETEV key version: DELETE only if the key's version is the one given.
    pub const DELETEV: Command =
        Command { code: 25, name: "DELETEV", writes: true, access: Access::Write, runs: Runs::Store };
    /// Every command, in code order.
    pub const ALL: [Command; 25] = [
        SET,
        GET,
        DELETE,
        PING,
        AUTH,
        EXISTS,
        EXPIRE,
        PERSIST,
        TTL,
        MGET,
        MSET,
        DBSIZE,
        INFO,
        SETNX,
        SETXX,
        SAVE,
        TOKEN_ADD,
        TOKEN_LIST,
        TOKEN_REVOKE,
        CONFIG_GET,
        CONFIG_SET,
        SCAN,
        GETV,
        SETV,
        DELETEV,
    ];
}

/// Command codes, as `u8` constants for matching (from [`commands`]).
pub mod command {
    use super::commands;

    /// SET.
    pub const SET: u8 = commands::SET.code;
    /// GET.
    pub const GET: u8 = commands::GET.code;
    /// DELETE.
    pub const DELETE: u8 = commands::DELETE.code;
    /// PING.
    pub const PING: u8 = commands::PING.code;
    /// AUTH.
    pub const AUTH: u8 = commands::AUTH.code;
    /// EXISTS.
    pub const EXISTS: u8 = commands::EXISTS.code;
    /// EXPIRE.
    pub const EXPIRE: u8 = commands::EXPIRE.code;
    /// PERSIST.
    pub const PERSIST: u8 = commands::PERSIST.code;
    /// TTL.
    pub const TTL: u8 = commands::TTL.code;
    /// MGET.
    pub const MGET: u8 = commands::MGET.code;
    /// MSET.
    pub const MSET: u8 = commands::MSET.code;
    /// DBSIZE.
    pub const DBSIZE: u8 = commands::DBSIZE.code;
    /// INFO.
    pub const INFO: u8 = commands::INFO.code;
    /// SETNX.
    pub const SETNX: u8 = commands::SETNX.code;
    /// SETXX.
    pub const SETXX: u8 = commands::SETXX.code;
    /// SAVE.
    pub const SAVE: u8 = commands::SAVE.code;
    /// TOKEN ADD.
    pub const TOKEN_ADD: u8 = commands::TOKEN_ADD.code;
    /// TOKEN LIST.
    pub const TOKEN_LIST: u8 = commands::TOKEN_LIST.code;
    /// TOKEN REVOKE.
    pub const TOKEN_REVOKE: u8 = commands::TOKEN_REVOKE.code;
    /// CONFIG GET.
    pub const CONFIG_GET: u8 = commands::CONFIG_GET.code;
    /// CONFIG SET.
    pub const CONFIG_SET: u8 = commands::CONFIG_SET.code;
    /// SCAN.
    pub const SCAN: u8 = commands::SCAN.code;
    /// GETV.
    pub const GETV: u8 = commands::GETV.code;
    /// SETV.
    pub const SETV: u8 = commands::SETV.code;
    /// DELETEV.
    pub const DELETEV: u8 = commands::DELETEV.code;
}

/// Size limits a decoder enforces before allocating anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key (at most 65,535).
    pub max_key_len: usize,
    /// Longest value field, including whole MGET/MSET lists.
    pub max_value_len: usize,
    /// Most keys in one MGET or MSET.
    pub max_batch_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_len: DEFAULT_MAX_KEY_LEN,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            max_batch_keys: DEFAULT_MAX_BATCH_KEYS,
        }
    }
}

impl Limits {
    /// The largest whole request these limits admit.
    pub fn max_request_len(&self) -> usize {
        REQUEST_HEADER_LEN + self.max_key_len.min(u16::MAX as usize) + self.max_value_len
    }
}

/// A problem that breaks the framing: the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not start with `"CM"`.
    #[error("bad magic {0:02x?}: not a cryptomem frame")]
    BadMagic([u8; 2]),
    /// A response status byte outside 0..=2.
    #[error("unknown response status {0}")]
    BadStatus(u8),
    /// A declared length is over the limit.
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The declared length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// A well-framed request the server will not execute; it answers with an error
/// and keeps the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

#[cfg(test)]
mod tests;
