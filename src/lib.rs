//! cryptomem: a secure, persistent in-memory cache.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod persist;
pub mod protocol;
pub mod secure;
pub mod server;
pub mod store;
pub mod units;
pub mod value_crypto;

pub use client::{Client, ClientConfig, KeyTtl, SetOptions};
