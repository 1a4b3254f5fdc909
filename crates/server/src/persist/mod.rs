//! What the server keeps on disk, and getting it back.
//!
//! A data directory holds the identity and credential files
//! ([`crate::server::DataDir`]), an exclusive `LOCK`, and the keyspace:
//!
//! - log segments `log-<first seq>.cml` (`persist/log.rs`): every change, in
//!   order, each a checksummed frame (`persist/frame.rs`) with a global
//!   sequence number;
//! - snapshots `snapshot-<cut seq>.cms` (`persist/snapshot.rs`): the whole
//!   keyspace at a sequence-number cut, with a CRC per entry and over the body.
//!
//! Those three files' module docs specify the formats byte by byte, for
//! anyone writing a reader (`cargo doc --document-private-items` renders
//! them). The public API here is what a server and the offline tool need:
//! [`Persistence`] runs the log and the snapshots, [`recover`] / [`scan`] /
//! [`list`] read a data dir, [`SnapshotReader`] / [`write_snapshot`] read and
//! write snapshots, [`remove_superseded`] deletes what a snapshot covers.
//!
//! Values are stored exactly as clients sent them: sealed, unreadable here.
//!
//! Recovery ([`recover`]) loads the newest snapshot and replays the records
//! after its cut. Taking a snapshot ([`Persistence::snapshot`]): hold every shard's writer
//! lock for an instant while reading the log position and starting a new
//! segment (the cut; nothing is copied), write the cut's maps in the
//! background while writers go on, rename the file into place, then delete
//! the older snapshot and every segment whose records are all at or below the
//! cut. A crash at any point leaves either the old snapshot with all the
//! segments after it, or the new one with (a superset of) the segments after
//! it: both recover.

mod background;
mod direct_file;
pub mod disk;
mod engine;
mod frame;
mod log;
mod log_writer;
mod recovery;
mod snapshot;

use std::path::PathBuf;

pub use engine::{PersistConfig, Persistence, SnapshotFigures, Superseded, remove_superseded};
pub use frame::{LogOp, LogRecord, SnapshotEntry, SnapshotEntryV1};
pub use log::{FsyncPolicy, LogError, UnknownFsyncPolicy, segment_name};
pub use recovery::{
    Found, Listing, LoadProgress, RecoveryReport, SegmentSummary, TailMode, list, recover, recover_reporting,
    remove_leftovers, scan, scan_reporting,
};
pub use snapshot::{SnapshotHeader, SnapshotReader, snapshot_name, write_snapshot};

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
