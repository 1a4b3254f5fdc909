//! The cryptomem wire protocol, used by both the client and the server.
//!
//! | module | owns |
//! |---|---|
//! | [`secure`] | the Noise NK handshake, the encrypted record layer, the server's key pair |
//! | [`protocol`] | request/response encoding and decoding; no I/O |
//! | [`token`] | access tokens (`cmt_<id>_<secret>`), sent as AUTH's value |
//! | [`Role`], [`TokenInfo`] | token roles, and the TOKEN LIST reply |
//!
//! Each module's docs give the byte layout precisely enough to write a
//! compatible implementation in another language.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod protocol;
mod role;
pub mod secure;
pub mod token;
mod token_list;

pub use role::{Role, UnknownRole};
pub use token::{MalformedToken, Token};
pub use token_list::{TokenInfo, TokenListing};
