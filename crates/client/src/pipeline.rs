//! Pipelines: commands queued on the client, sent in one write and answered
//! together, like a Redis client's pipeline.
//!
//! A [`Client`] already pipelines calls made concurrently from many tasks;
//! a [`Pipeline`] does the same from one task without a task, channel send
//! and wakeup per command, which is what a batch of writes from one place
//! wants. Commands are not atomic as a group: each succeeds or fails on its
//! own, so [`Pipeline::execute`] returns one result per command.
//!
//! ```no_run
//! # async fn demo(client: cryptomem_client::Client) -> cryptomem_client::Result<()> {
//! use cryptomem_client::PipelineReply;
//!
//! let mut p = client.pipeline();
//! p.set("user:1", b"alice")?.set("user:2", b"bob")?.get("user:1")?.delete("user:3")?;
//! let replies = p.execute().await?;
//! assert_eq!(replies[2].as_ref().ok(), Some(&PipelineReply::Value(Some(b"alice".to_vec()))));
//! # Ok(()) }
//! ```

use std::time::Instant;

use bytes::Bytes;

use super::{Client, Error, Result, SetOptions};
use crate::protocol::{Request, Response, Status, encode_request};
use crate::value_crypto::Keyring;

/// What one pipelined command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineReply {
    /// A [`Pipeline::get`]: the opened value, `None` if the key is missing.
    Value(Option<Vec<u8>>),
    /// A [`Pipeline::get_raw`]: the stored bytes, `None` if the key is missing.
    Raw(Option<Bytes>),
    /// A set: whether it wrote (false when an NX/XX condition was not met).
    Written(bool),
    /// [`Pipeline::delete`] / [`Pipeline::exists`]: whether the key existed.
    Found(bool),
}

/// How to read a queued command's response.
enum Expect {
    /// Open the value stored under this key.
    Value(Bytes),
    Raw,
    Written,
    Found,
}

/// Commands queued for one round trip. Made by [`Client::pipeline`].
pub struct Pipeline<'a> {
    client: &'a Client,
    frame: Vec<u8>,
    expect: Vec<Expect>,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("commands", &self.expect.len()).finish_non_exhaustive()
    }
}

impl<'a> Pipeline<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Self { client, frame: Vec::new(), expect: Vec::new() }
    }

    /// Number of queued commands.
    pub fn len(&self) -> usize {
        self.expect.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.expect.is_empty()
    }

    fn push(&mut self, request: &Request, expect: Expect) -> Result<&mut Self> {
        encode_request(request, &mut self.frame).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.expect.push(expect);
        Ok(self)
    }

    /// Queues a sealed SET with no TTL.
    ///
    /// # Errors
    /// [`Error::NoValueKey`], [`Error::ValueCrypto`], or
    /// [`Error::InvalidArgument`] for a key or value too long to encode.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.set_with(key, value, SetOptions::default())
    }

    /// Queues a sealed SET with options.
    ///
    /// # Errors
    /// As [`Pipeline::set`].
    pub fn set_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: SetOptions,
    ) -> Result<&mut Self> {
        self.client.encode_sealed_set(key.as_ref(), value.as_ref(), options, &mut self.frame)?;
        self.expect.push(Expect::Written);
        Ok(self)
    }

    /// Queues a SET of bytes as given, without sealing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key or value too long to encode.
    pub fn set_raw_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<&mut Self> {
        let request = Request::Set {
            key: self.client.wire_key(key.as_ref()),
            value: value.into(),
            ttl: options.ttl,
            condition: options.condition,
        };
        self.push(&request, Expect::Written)
    }

    /// Queues a GET whose value is opened with the client's keys.
    ///
    /// # Errors
    /// [`Error::NoValueKey`], or [`Error::InvalidArgument`] for a key too long.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.client.keyring()?;
        // Sent as the server sees it; opened with the real name, which the seal binds.
        let name = Bytes::copy_from_slice(key.as_ref());
        self.push(&Request::Get { key: self.client.wire_key(&name) }, Expect::Value(name))
    }

    /// Queues a GET of the stored bytes, unopened.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key too long to encode.
    pub fn get_raw(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.push(&Request::Get { key: self.client.wire_key(key.as_ref()) }, Expect::Raw)
    }

    /// Queues a DELETE.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key too long to encode.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.push(&Request::Delete { key: self.client.wire_key(key.as_ref()) }, Expect::Found)
    }

    /// Queues an EXISTS.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key too long to encode.
    pub fn exists(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.push(&Request::Exists { key: self.client.wire_key(key.as_ref()) }, Expect::Found)
    }

    /// Sends every queued command in one write and waits for all responses.
    /// The outer error is the connection's (nothing can be said about which
    /// commands ran); the inner ones are per command, e.g.
    /// [`Error::Server`] with `NOPERM`, or [`Error::ValueCrypto`] for a value
    /// that does not open.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`], [`Error::Timeout`], connection errors.
    pub async fn execute(self) -> Result<Vec<Result<PipelineReply>>> {
        Ok(self.execute_timed().await?.0)
    }

    /// As [`Pipeline::execute`], also returning the instant the connection
    /// read the first of the responses (`None` for an empty pipeline): where
    /// redis-benchmark stops its clock for a pipelined batch, for measuring
    /// latency the same way.
    ///
    /// # Errors
    /// As [`Pipeline::execute`].
    pub async fn execute_timed(self) -> Result<(Vec<Result<PipelineReply>>, Option<Instant>)> {
        let Self { client, frame, expect } = self;
        if expect.is_empty() {
            return Ok((Vec::new(), None));
        }
        let (responses, first_at) = client.request_many(frame, expect.len()).await?;
        let keyring = client.inner.config.keyring.as_ref();
        Ok((expect.into_iter().zip(responses).map(|(e, r)| reply(e, r, keyring)).collect(), Some(first_at)))
    }
}

fn reply(expect: Expect, response: Response, keyring: Option<&Keyring>) -> Result<PipelineReply> {
    if let Some((code, message)) = response.error_parts() {
        return Err(Error::Server { code, message });
    }
    let ok = response.status == Status::Ok;
    Ok(match expect {
        Expect::Value(key) => match (ok, keyring) {
            (false, _) => PipelineReply::Value(None),
            (true, Some(ring)) => PipelineReply::Value(Some(ring.open(&key, &response.body)?)),
            (true, None) => return Err(Error::NoValueKey),
        },
        Expect::Raw => PipelineReply::Raw(ok.then_some(response.body)),
        Expect::Written => PipelineReply::Written(ok),
        Expect::Found => PipelineReply::Found(ok),
    })
}
