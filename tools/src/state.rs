//! The keyspace a data dir holds, rebuilt read-only from its snapshot and log.

use std::collections::HashMap;
use std::path::Path;

use cryptomem_server::persist::LogOp;
use cryptomem_server::persist::PersistError;
use cryptomem_server::persist::{Found, RecoveryReport, TailMode, scan};

/// Value size and expiry per key, before expiry is applied.
pub struct State {
    pub keys: HashMap<Vec<u8>, (usize, Option<u64>)>,
    pub report: RecoveryReport,
}

/// Replays `dir` without touching any file.
pub fn load(dir: &Path) -> Result<State, PersistError> {
    let mut keys: HashMap<Vec<u8>, (usize, Option<u64>)> = HashMap::new();
    let report = scan(dir, TailMode::Report, |item| match item {
        Found::Entry(e) => {
            keys.insert(e.key, (e.value.len(), e.expires_at_ms));
        }
        Found::Record(record) => match record.op {
            LogOp::Set { key, value, expires_at_ms } => {
                keys.insert(key, (value.len(), expires_at_ms));
            }
            LogOp::Delete { key } => {
                keys.remove(&key);
            }
            LogOp::Expire { key, expires_at_ms } => {
                if let Some(k) = keys.get_mut(&key) {
                    k.1 = Some(expires_at_ms);
                }
            }
            LogOp::Persist { key } => {
                if let Some(k) = keys.get_mut(&key) {
                    k.1 = None;
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
