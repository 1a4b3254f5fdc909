//! CONFIG GET / CONFIG SET: the settings an admin may change while the
//! server runs. Changes last until the server stops; the flag, variable or
//! file sets them at the next start.

use crate::store::{EvictionPolicy, Store};
use crate::units::parse_size;

/// The settings CONFIG knows.
pub const NAMES: [&str; 3] = ["maxmemory", "maxmemory-policy", "maxmemory-samples"];

/// A CONFIG request that cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCommandError {
    /// No such setting, or not one CONFIG may change.
    #[error("unknown setting {0:?}; CONFIG knows {names}", names = NAMES.join(", "))]
    Unknown(String),
    /// The value is malformed or out of range.
    #[error("{name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The current value of `name`.
///
/// # Errors
/// [`ConfigCommandError::Unknown`].
pub fn get(store: &Store, name: &str) -> Result<String, ConfigCommandError> {
    let memory = store.memory();
    match name {
        "maxmemory" => Ok(memory.limit().to_string()),
        "maxmemory-policy" => Ok(memory.policy().to_string()),
        "maxmemory-samples" => Ok(memory.samples().to_string()),
        other => Err(ConfigCommandError::Unknown(other.to_string())),
    }
}

/// Sets `name` to `value`. Returns whether the store may now be over its
/// limit (the caller evicts down to it).
///
/// # Errors
/// [`ConfigCommandError`] for an unknown setting or a bad value; nothing changes then.
pub fn set(store: &Store, name: &str, value: &str) -> Result<bool, ConfigCommandError> {
    let memory = store.memory();
    let invalid = |name: &'static str, reason: String| ConfigCommandError::Invalid { name, reason };
    match name {
        "maxmemory" => {
            let bytes = parse_size(value).map_err(|e| invalid("maxmemory", e.to_string()))? as u64;
            store.configure_memory(bytes, memory.policy());
            Ok(true)
        }
        "maxmemory-policy" => {
            let policy: EvictionPolicy =
                value.parse().map_err(|e: crate::store::UnknownPolicy| invalid("maxmemory-policy", e.to_string()))?;
            store.configure_memory(memory.limit(), policy);
            Ok(true)
        }
        "maxmemory-samples" => {
            let n: usize =
                value.trim().parse().map_err(|_| invalid("maxmemory-samples", format!("{value:?} is not a number")))?;
            if !(1..=64).contains(&n) {
                return Err(invalid("maxmemory-samples", format!("{n} is outside 1..=64")));
            }
            memory.set_samples(n);
            Ok(false)
        }
        other => Err(ConfigCommandError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_ones_change_nothing() {
        let store = Store::new(4);
        assert_eq!(get(&store, "maxmemory").unwrap(), "0");
        set(&store, "maxmemory", "64MiB").unwrap();
        set(&store, "maxmemory-policy", "allkeys-lfu").unwrap();
        set(&store, "maxmemory-samples", "10").unwrap();
        assert_eq!(get(&store, "maxmemory").unwrap(), (64u64 << 20).to_string());
        assert_eq!(get(&store, "maxmemory-policy").unwrap(), "allkeys-lfu");
        assert_eq!(get(&store, "maxmemory-samples").unwrap(), "10");
        assert!(set(&store, "maxmemory-policy", "lru").unwrap_err().to_string().contains("allkeys-lru"));
        assert!(set(&store, "maxmemory", "lots").is_err());
        assert!(set(&store, "maxmemory-samples", "0").is_err());
        assert!(matches!(get(&store, "requirepass"), Err(ConfigCommandError::Unknown(_))));
        assert_eq!(get(&store, "maxmemory-policy").unwrap(), "allkeys-lfu");
    }
}
