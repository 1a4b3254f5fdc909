//! What the server keeps on disk. So far: the data directory's identity and
//! credential files ([`data_dir`]), written atomically ([`files`]).

pub mod data_dir;
pub mod files;

pub use data_dir::{DataDir, DataDirError, InitReport};
