//! cryptomem: a secure, persistent in-memory cache.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod protocol;
pub mod secure;
pub mod store;
