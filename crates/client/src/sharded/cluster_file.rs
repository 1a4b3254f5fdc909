//! The cluster file: the servers of a sharded cluster, each with the
//! credentials a single-server client would use.
//!
//! TOML, mode 0600 when it holds tokens itself:
//!
//! ```toml
//! format = "cryptomem-cluster"
//! version = 1
//! failover = "strict"            # optional: "strict" (default) or "cache-only"
//!
//! [[server]]
//! name = "cache-a"               # optional; default: the server's address
//! weight = 1.0                   # optional; default 1
//! credentials = "a/credentials.toml"   # a credentials file, relative to this file
//!
//! [[server]]
//! name = "cache-b"
//! server = "10.0.0.12:7379"      # or the credentials inline, as in credentials.toml
//! server_public_key = "<64 hex digits>"
//! token = "cmt_<id>_<secret>"
//! previous_server_public_keys = []   # optional
//! ```
//!
//! | key | meaning |
//! |-----|---------|
//! | `format`, `version` | `"cryptomem-cluster"`, 1; other versions are refused |
//! | `failover` | what a down server's keys do: [`Failover`] |
//! | `server` (array) | one entry per server, at least one |
//! | `name` | the name keys are placed by ([`super::rendezvous`]); unique. Name servers explicitly so that moving one to a new address does not move its keys |
//! | `weight` | share of the keys relative to the others, finite and above 0 |
//! | `credentials` | path of a single-server credentials file ([`crate::credentials`]), relative to the cluster file's directory |
//! | `server`, `server_public_key`, `token`, `previous_server_public_keys` | the same fields inline, instead of `credentials` |
//!
//! Each entry has either `credentials` or the three inline fields, not
//! both. Unknown keys are errors.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::Failover;
use crate::credentials::{Credentials, CredentialsError};
use crate::secure::parse_public_key;
use cryptomem_wire::Token;

const FORMAT: &str = "cryptomem-cluster";
const VERSION: u32 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    format: String,
    version: u32,
    #[serde(default)]
    failover: Option<String>,
    #[serde(default)]
    server: Vec<ServerForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerForm {
    name: Option<String>,
    weight: Option<f64>,
    credentials: Option<String>,
    server: Option<String>,
    server_public_key: Option<String>,
    token: Option<String>,
    #[serde(default)]
    previous_server_public_keys: Vec<String>,
}

/// One server of a cluster file.
#[derive(Debug, Clone)]
pub struct ClusterServer {
    /// The placement name (the address when the file names none).
    pub name: String,
    /// Relative share of the keys.
    pub weight: f64,
    /// How to reach it.
    pub credentials: Credentials,
}

/// A cluster file's contents.
#[derive(Debug, Clone)]
pub struct ClusterFile {
    /// What a down server's keys do.
    pub failover: Failover,
    /// The servers, in the file's order.
    pub servers: Vec<ClusterServer>,
}

impl ClusterFile {
    /// Reads a cluster file, and the credentials files it points to.
    ///
    /// # Errors
    /// [`CredentialsError`] naming the file (and the entry) at fault, never a token.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let err = |reason: String| CredentialsError::new(path, reason);
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        let form: FileForm = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
        if form.format != FORMAT || form.version != VERSION {
            return Err(err(format!("expected format `{FORMAT}` version {VERSION}")));
        }
        let failover = match form.failover.as_deref() {
            None | Some("strict") => Failover::Strict,
            Some("cache-only") => Failover::CacheOnly,
            Some(other) => return Err(err(format!("failover must be \"strict\" or \"cache-only\", not {other:?}"))),
        };
        if form.server.is_empty() {
            return Err(err("no [[server]] entries".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut names = HashSet::new();
        let mut servers = Vec::with_capacity(form.server.len());
        for (i, entry) in form.server.into_iter().enumerate() {
            let at = |reason: String| err(format!("server entry {}: {reason}", i + 1));
            let credentials = entry.credentials(dir).map_err(at)?;
            let name = entry.name.unwrap_or_else(|| credentials.server.clone());
            let weight = entry.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(at(format!("weight must be a finite number above 0, not {weight}")));
            }
            if !names.insert(name.clone()) {
                return Err(at(format!("the name {name:?} is used twice (names place keys, so they must differ)")));
            }
            servers.push(ClusterServer { name, weight, credentials });
        }
        Ok(Self { failover, servers })
    }
}

impl ServerForm {
    fn credentials(&self, dir: &Path) -> Result<Credentials, String> {
        let inline = [&self.server, &self.server_public_key, &self.token];
        match (&self.credentials, inline) {
            (Some(file), [None, None, None]) if self.previous_server_public_keys.is_empty() => {
                Credentials::load(&dir.join(file)).map_err(|e| e.to_string())
            }
            (Some(_), _) => Err("give either `credentials` or the inline fields, not both".into()),
            (None, [Some(server), Some(key), Some(token)]) => Ok(Credentials {
                server: server.clone(),
                server_public_key: parse_public_key(key).map_err(|e| format!("server_public_key: {e}"))?,
                token: Token::parse(token).map_err(|e| format!("token: {e}"))?,
                previous_server_public_keys: self
                    .previous_server_public_keys
                    .iter()
                    .map(|k| parse_public_key(k))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("previous_server_public_keys: {e}"))?,
            }),
            (None, _) => Err("needs `credentials` or all of `server`, `server_public_key` and `token`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const TOKEN: &str = "cmt_0123456789ab_2222222222222222222222222222222222222222222222222222222222222222";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn inline_and_referenced_credentials_load_with_names_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        write(
            &dir.path().join("a"),
            "credentials.toml",
            &format!(
                "format = \"cryptomem-credentials\"\nversion = 1\nserver = \"127.0.0.1:1\"\n\
                 server_public_key = \"{KEY}\"\ntoken = \"{TOKEN}\"\n"
            ),
        );
        let path = write(
            dir.path(),
            "cluster.toml",
            &format!(
                "format = \"cryptomem-cluster\"\nversion = 1\nfailover = \"cache-only\"\n\
                 [[server]]\ncredentials = \"a/credentials.toml\"\n\
                 [[server]]\nname = \"b\"\nweight = 2.5\nserver = \"127.0.0.1:2\"\n\
                 server_public_key = \"{KEY}\"\ntoken = \"{TOKEN}\"\n"
            ),
        );
        let file = ClusterFile::load(&path).unwrap();
        assert_eq!(file.failover, Failover::CacheOnly);
        let summary: Vec<_> =
            file.servers.iter().map(|s| (s.name.as_str(), s.weight, s.credentials.server.as_str())).collect();
        assert_eq!(summary, [("127.0.0.1:1", 1.0, "127.0.0.1:1"), ("b", 2.5, "127.0.0.1:2")]);
    }

    #[test]
    fn mistakes_are_named_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let entry = format!("server = \"h:1\"\nserver_public_key = \"{KEY}\"\ntoken = \"{TOKEN}\"\n");
        let cases = [
            ("format = \"cryptomem-cluster\"\nversion = 2\n".to_string(), "version 1"),
            ("format = \"cryptomem-cluster\"\nversion = 1\n".to_string(), "no [[server]]"),
            (format!("format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\nport = 1\n{entry}"), "unknown field"),
            (
                format!("format = \"cryptomem-cluster\"\nversion = 1\nfailover = \"maybe\"\n[[server]]\n{entry}"),
                "failover",
            ),
            (
                format!("format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\nweight = 0.0\n{entry}"),
                "entry 1: weight",
            ),
            (
                format!("format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\n{entry}[[server]]\n{entry}"),
                "entry 2: the name \"h:1\" is used twice",
            ),
            (
                format!("format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\ncredentials = \"x\"\n{entry}"),
                "not both",
            ),
            ("format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\nserver = \"h:1\"\n".to_string(), "needs"),
            (
                "format = \"cryptomem-cluster\"\nversion = 1\n[[server]]\ncredentials = \"missing.toml\"\n".to_string(),
                "missing.toml",
            ),
        ];
        for (text, expected) in cases {
            let err = ClusterFile::load(&write(dir.path(), "c.toml", &text)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
            assert!(!err.contains("2222222222"), "the token leaked: {err}");
        }
    }
}
