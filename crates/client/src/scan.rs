//! [`Scan`]: the keys of a point-in-time view, page by page (SCAN).

use std::collections::VecDeque;

use bytes::Bytes;
use cryptomem_wire::protocol::Request;

use crate::{Client, Error, Result};

/// Keys per page unless [`Scan::page_size`] says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// A listing of the server's keys as they were when the first page was
/// asked for: every key of that moment exactly once (keys written since are
/// not listed, keys deleted since still are), none twice. Made by
/// [`Client::scan`]; nothing is sent until [`Scan::next`] or
/// [`Scan::next_page`]. Key names are listed as the server stores them:
/// with [hidden names](crate::hidden_names), the namespace and a hash, and
/// a prefix must then be empty or a whole namespace (ending in the separator).
///
/// The server drops a cursor unused for 60 s: a scan paused that long fails
/// with [`Error::Server`] code `NOCURSOR`, and must start again.
#[derive(Debug)]
pub struct Scan {
    client: Client,
    prefix: Bytes,
    page_size: u32,
    /// `None` before the first page; `Some(0)` once the server said done.
    cursor: Option<u64>,
    buffered: VecDeque<Bytes>,
}

impl Scan {
    pub(crate) fn new(client: Client, prefix: Bytes) -> Self {
        Self { client, prefix, page_size: DEFAULT_PAGE_SIZE, cursor: None, buffered: VecDeque::new() }
    }

    /// Asks for pages of at most `n` keys (1..=the server's batch limit).
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// The next page of keys (possibly empty), or `None` once the listing is
    /// complete.
    ///
    /// # Errors
    /// Any [`Error`]; `NOCURSOR` from the server if the cursor expired.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Bytes>>> {
        let cursor = match self.cursor {
            Some(0) => return Ok(None),
            Some(c) => c,
            None => 0,
        };
        let prefix = match &self.client.inner.config.hidden_names {
            Some(names) => names.wire_prefix(&self.prefix).map_err(|e| Error::InvalidArgument(e.into()))?,
            None => self.prefix.clone(),
        };
        let request = Request::Scan { cursor, count: self.page_size, prefix };
        let reply = self.client.request(&request).await?;
        let (next, keys) = reply.parse_scan().map_err(|e| Error::Protocol(e.to_string()))?;
        self.cursor = Some(next);
        Ok(Some(keys))
    }

    /// The next key, or `None` once the listing is complete.
    ///
    /// # Errors
    /// As [`Scan::next_page`].
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(key) = self.buffered.pop_front() {
                return Ok(Some(key));
            }
            match self.next_page().await? {
                Some(page) => self.buffered.extend(page),
                None => return Ok(None),
            }
        }
    }

    /// Every remaining key.
    ///
    /// # Errors
    /// As [`Scan::next_page`].
    pub async fn collect(mut self) -> Result<Vec<Bytes>> {
        let mut all: Vec<Bytes> = self.buffered.drain(..).collect();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}
