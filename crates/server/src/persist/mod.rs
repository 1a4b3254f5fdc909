//! What the server keeps on disk, and getting it back.
//!
//! A data directory holds the identity and credential files ([`data_dir`]),
//! an exclusive `LOCK`, and the keyspace:
//!
//! - log segments `log-<first seq>.cml` ([`log`]): every change, in order,
//!   each a checksummed [`frame`] with a global sequence number;
//! - snapshots `snapshot-<cut seq>.cms` ([`snapshot`]): the whole keyspace at a
//!   sequence-number cut, with a CRC per entry and over the body.
//!
//! Values are stored exactly as clients sent them: sealed, unreadable here.
//!
//! Recovery ([`recovery`]) loads the newest snapshot and replays the records
//! after its cut. Taking a snapshot ([`engine`]): hold every shard's writer
//! lock for an instant while reading the log position and starting a new
//! segment (the cut; nothing is copied), write the cut's maps in the
//! background while writers go on, rename the file into place, then delete
//! the older snapshot and every segment whose records are all at or below the
//! cut. A crash at any point leaves either the old snapshot with all the
//! segments after it, or the new one with (a superset of) the segments after
//! it: both recover.

pub mod background;
pub mod direct_file;
pub mod disk;
pub mod engine;
pub use cryptomem_util::files;
pub mod frame;
pub mod log;
mod log_writer;
pub mod recovery;
pub mod snapshot;

use std::path::PathBuf;

pub use engine::{PersistConfig, Persistence};
pub use log::FsyncPolicy;

/// A persistence failure. Corruption is its own variant, distinct from I/O,
/// and always names the file and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's contents are damaged.
    #[error("{} is corrupted at byte offset {offset}: {reason}", file.display())]
    Corrupted {
        /// The file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}
