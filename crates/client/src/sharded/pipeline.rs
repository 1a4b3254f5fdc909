//! [`ShardedPipeline`]: a pipeline whose commands go to their keys' servers.

use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;

use super::ShardedClient;
use crate::{Error, Pipeline, PipelineReply, Result, SetOptions};

/// Commands queued for one round trip per server involved, sent to all of
/// them at once. Made by [`ShardedClient::pipeline`]; the calls are those of
/// [`Pipeline`]. Each command is routed when it is queued (in cache-only
/// mode, around servers known to be down then); a pipeline does not fail
/// over once sent.
pub struct ShardedPipeline<'a> {
    client: &'a ShardedClient,
    /// One pipeline per server, made when its first command is queued.
    parts: Vec<Option<Pipeline<'a>>>,
    /// Each command's server and place in that server's pipeline.
    order: Vec<(usize, usize)>,
}

impl std::fmt::Debug for ShardedPipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedPipeline").field("commands", &self.order.len()).finish_non_exhaustive()
    }
}

impl<'a> ShardedPipeline<'a> {
    pub(super) fn new(client: &'a ShardedClient) -> Self {
        let parts = (0..client.inner.servers.len()).map(|_| None).collect();
        Self { client, parts, order: Vec::new() }
    }

    /// Number of queued commands.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Queues one command on `key`'s server with `queue`.
    fn on(&mut self, key: &[u8], queue: impl FnOnce(&mut Pipeline<'a>) -> Result<()>) -> Result<&mut Self> {
        let server = self.client.index_for(key);
        let client = self.client.server(server).1;
        let part = self.parts[server].get_or_insert_with(|| client.pipeline());
        queue(part)?;
        self.order.push((server, part.len() - 1));
        Ok(self)
    }

    /// Queues a sealed SET with no TTL, as [`Pipeline::set`].
    ///
    /// # Errors
    /// As [`Pipeline::set`].
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        self.set_with(key, value, SetOptions::default())
    }

    /// Queues a sealed SET with options, as [`Pipeline::set_with`].
    ///
    /// # Errors
    /// As [`Pipeline::set_with`].
    pub fn set_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        options: SetOptions,
    ) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.set_with(key, value, options).map(drop))
    }

    /// Queues a SET of bytes as given, as [`Pipeline::set_raw_with`].
    ///
    /// # Errors
    /// As [`Pipeline::set_raw_with`].
    pub fn set_raw_with(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.set_raw_with(key, value, options).map(drop))
    }

    /// Queues a GET whose value is opened, as [`Pipeline::get`].
    ///
    /// # Errors
    /// As [`Pipeline::get`].
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.get(key).map(drop))
    }

    /// Queues a GET of the stored bytes, as [`Pipeline::get_raw`].
    ///
    /// # Errors
    /// As [`Pipeline::get_raw`].
    pub fn get_raw(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.get_raw(key).map(drop))
    }

    /// Queues a DELETE.
    ///
    /// # Errors
    /// As [`Pipeline::delete`].
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.delete(key).map(drop))
    }

    /// Queues an EXISTS.
    ///
    /// # Errors
    /// As [`Pipeline::exists`].
    pub fn exists(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        let key = key.as_ref();
        self.on(key, |p| p.exists(key).map(drop))
    }

    /// Sends each server its commands, all servers at once, and returns one
    /// result per command in the order queued. A server whose round trip
    /// failed gives each of its commands [`Error::Unavailable`] naming it
    /// (nothing can be said about which of them ran); the other servers'
    /// results stand.
    pub async fn execute(self) -> Vec<Result<PipelineReply>> {
        self.execute_timed().await.0
    }

    /// As [`ShardedPipeline::execute`], also returning the instant the
    /// first response from any server was read (see
    /// [`Pipeline::execute_timed`]).
    pub async fn execute_timed(self) -> (Vec<Result<PipelineReply>>, Option<Instant>) {
        let Self { client, parts, order } = self;
        let sent = parts
            .into_iter()
            .enumerate()
            .filter_map(|(server, part)| part.map(|p| async move { (server, p.execute_timed().await) }));
        let mut replies: Vec<Vec<Option<Result<PipelineReply>>>> =
            (0..client.inner.servers.len()).map(|_| Vec::new()).collect();
        let mut failed: Vec<Option<String>> = vec![None; replies.len()];
        let mut first: Option<Instant> = None;
        for (server, outcome) in join_all(sent).await {
            match outcome {
                Ok((results, at)) => {
                    first = first.into_iter().chain(at).min();
                    replies[server] = results.into_iter().map(Some).collect();
                }
                Err(e) => failed[server] = Some(e.to_string()),
            }
        }
        let replies = order
            .into_iter()
            .map(|(server, i)| {
                if let Some(reason) = &failed[server] {
                    let name = client.server(server).0.to_string();
                    return Err(Error::Unavailable { server: name, reason: reason.clone() });
                }
                replies[server]
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_else(|| Err(Error::Protocol("a pipelined command got no answer".into())))
            })
            .collect();
        (replies, first)
    }
}
