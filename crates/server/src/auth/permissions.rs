//! What each role may do, and key-prefix limits.
//!
//! | command | read | write | admin |
//! |---|---|---|---|
//! | PING, AUTH | yes | yes | yes |
//! | GET, GETV, EXISTS, TTL, MGET, DBSIZE, INFO, SCAN | yes | yes | yes |
//! | SET, SETNX, SETXX, SETV, DELETE, DELETEV, EXPIRE, PERSIST, MSET | no | yes | yes |
//! | SAVE, TOKEN ADD / LIST / REVOKE | no | no | yes |
//!
//! A token with prefixes may only name keys that start with one of them: the
//! key of a single-key command and every key of MGET and MSET. SCAN lists
//! only keys under them.

use std::sync::Arc;

use crate::protocol::{Access, Request};

use super::Role;

/// An authenticated connection's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// Its role.
    pub role: Role,
    /// Allowed key prefixes; empty means every key.
    pub prefixes: Arc<[Vec<u8>]>,
}

/// Why a request is refused with `NOPERM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token's role does not allow the command.
    #[error("this token ({role} role) may not run {command}")]
    Command {
        /// The token's role.
        role: Role,
        /// The command's name, lower case.
        command: String,
    },
    /// A key is outside the token's prefixes (escaped for printing).
    #[error("this token may not touch key `{0}`")]
    Key(String),
}

/// The most a role grants (the command table says what each command needs).
fn grants(role: Role) -> Access {
    match role {
        Role::Read => Access::Read,
        Role::Write => Access::Write,
        Role::Admin => Access::Admin,
    }
}

impl Principal {
    /// Whether `key` is inside this principal's prefixes.
    pub fn may_touch(&self, key: &[u8]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// Checks `request` against the role and prefixes.
    ///
    /// # Errors
    /// [`Denied`], whose text is the `NOPERM` reply (it names the command or
    /// key, never a secret).
    pub fn check(&self, request: &Request) -> Result<(), Denied> {
        if request.command().access > grants(self.role) {
            return Err(Denied::Command { role: self.role, command: request.name().to_lowercase() });
        }
        let keys: Vec<&[u8]> = match request {
            Request::Get { key }
            | Request::Set { key, .. }
            | Request::Delete { key }
            | Request::Exists { key }
            | Request::Expire { key, .. }
            | Request::Persist { key }
            | Request::Ttl { key }
            | Request::GetVersioned { key }
            | Request::SetIfVersion { key, .. }
            | Request::DeleteIfVersion { key, .. } => vec![key],
            Request::MGet { keys } => keys.iter().map(AsRef::as_ref).collect(),
            Request::MSet { pairs, .. } => pairs.iter().map(|(k, _)| k.as_ref()).collect(),
            _ => Vec::new(),
        };
        match keys.into_iter().find(|k| !self.may_touch(k)) {
            Some(key) => Err(Denied::Key(key.escape_ascii().to_string())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn who(role: Role, prefixes: &[&str]) -> Principal {
        Principal { token_id: "x".into(), role, prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect() }
    }

    fn get(k: &'static str) -> Request {
        Request::Get { key: Bytes::from_static(k.as_bytes()) }
    }

    fn set(k: &'static str) -> Request {
        Request::Set {
            key: Bytes::from_static(k.as_bytes()),
            value: Bytes::new(),
            ttl: None,
            condition: Default::default(),
        }
    }

    #[test]
    fn roles() {
        assert!(who(Role::Read, &[]).check(&get("k")).is_ok());
        assert!(who(Role::Read, &[]).check(&set("k")).unwrap_err().to_string().contains("may not run set"));
        assert!(who(Role::Write, &[]).check(&set("k")).is_ok());
        assert!(who(Role::Write, &[]).check(&Request::Save).is_err());
        assert!(who(Role::Admin, &[]).check(&Request::Save).is_ok());
        assert!(who(Role::Read, &[]).check(&Request::TokenList).is_err());
    }

    #[test]
    fn prefixes_cover_every_key() {
        let p = who(Role::Write, &["app1:", "shared:"]);
        assert!(p.check(&set("app1:x")).is_ok());
        assert!(p.check(&get("shared:y")).is_ok());
        assert!(p.check(&get("app2:x")).unwrap_err().to_string().contains("app2:x"));
        let mget = Request::MGet { keys: vec![Bytes::from_static(b"app1:a"), Bytes::from_static(b"other")] };
        assert!(p.check(&mget).is_err());
        let mset = Request::MSet {
            pairs: vec![(Bytes::from_static(b"app1:a"), Bytes::new()), (Bytes::from_static(b"x"), Bytes::new())],
            ttl: None,
        };
        assert!(p.check(&mset).is_err());
        assert!(p.check(&Request::DbSize).is_ok());
    }
}
