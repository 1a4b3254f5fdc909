//! The keyspace a data dir holds, rebuilt read-only from its snapshot and log.

use std::collections::HashMap;
use std::path::Path;

use cryptomem_server::persist::LogOp;
use cryptomem_server::persist::PersistError;
use cryptomem_server::persist::{Found, RecoveryReport, TailMode, scan};

/// What the data dir holds of one key.
pub struct KeyState {
    pub value_len: usize,
    pub expires_at_ms: Option<u64>,
    /// Sequence number of the key's last change (its compare-and-set version).
    pub version: u64,
}

/// Every key, before expiry is applied.
pub struct State {
    pub keys: HashMap<Vec<u8>, KeyState>,
    pub report: RecoveryReport,
}

/// Replays `dir` without touching any file.
pub fn load(dir: &Path) -> Result<State, PersistError> {
    let mut keys: HashMap<Vec<u8>, KeyState> = HashMap::new();
    let report = scan(dir, TailMode::Report, |item| match item {
        Found::Entry(e) => {
            keys.insert(
                e.key,
                KeyState { value_len: e.value.len(), expires_at_ms: e.expires_at_ms, version: e.version },
            );
        }
        Found::Record(record) => match record.op {
            LogOp::Set { key, value, expires_at_ms } => {
                keys.insert(key, KeyState { value_len: value.len(), expires_at_ms, version: record.seq });
            }
            LogOp::Delete { key } => {
                keys.remove(&key);
            }
            LogOp::Expire { key, expires_at_ms } => {
                if let Some(k) = keys.get_mut(&key) {
                    (k.expires_at_ms, k.version) = (Some(expires_at_ms), record.seq);
                }
            }
            LogOp::Persist { key } => {
                if let Some(k) = keys.get_mut(&key) {
                    (k.expires_at_ms, k.version) = (None, record.seq);
                }
            }
        },
    })?;
    Ok(State { keys, report })
}

/// Now, in Unix ms.
pub fn now_ms() -> u64 {
    cryptomem_server::store::Clock::System.now_ms()
}
