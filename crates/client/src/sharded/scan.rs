//! [`ShardedScan`]: SCAN over every server of a [`ShardedClient`].

use bytes::Bytes;

use super::ShardedClient;
use super::unavailable;
use crate::{Result, Scan};

/// Every server's [`Scan`], one after another (in the order the servers
/// were given): each key once, as each server's scan promises, except
/// that in cache-only mode a key written to a stand-in during an outage
/// may be listed by both servers. Made by [`ShardedClient::scan`].
#[derive(Debug)]
pub struct ShardedScan {
    /// Each server's name and scan, the current one first.
    scans: std::collections::VecDeque<(String, Scan)>,
}

impl ShardedScan {
    pub(super) fn new(client: &ShardedClient, prefix: &[u8]) -> Self {
        let scans = client.servers().map(|(name, c)| (name.to_string(), c.scan(prefix))).collect();
        Self { scans }
    }

    /// Asks each server for pages of at most `n` keys.
    #[must_use]
    pub fn page_size(self, n: u32) -> Self {
        Self { scans: self.scans.into_iter().map(|(name, s)| (name, s.page_size(n))).collect() }
    }

    /// The next page of keys (possibly empty), or `None` once every server
    /// has been listed.
    ///
    /// # Errors
    /// As [`Scan::next_page`]; a server that cannot be reached is
    /// [`crate::Error::Unavailable`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<Bytes>>> {
        while let Some((_, scan)) = self.scans.front_mut() {
            match scan.next_page().await {
                Ok(Some(page)) => return Ok(Some(page)),
                Ok(None) => drop(self.scans.pop_front()),
                Err(e) => return Err(unavailable(&self.scans[0].0, e)),
            }
        }
        Ok(None)
    }

    /// The next key, or `None` once every server has been listed.
    ///
    /// # Errors
    /// As [`ShardedScan::next_page`].
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        while let Some((_, scan)) = self.scans.front_mut() {
            match scan.next().await {
                Ok(Some(key)) => return Ok(Some(key)),
                Ok(None) => drop(self.scans.pop_front()),
                Err(e) => return Err(unavailable(&self.scans[0].0, e)),
            }
        }
        Ok(None)
    }

    /// Every remaining key of every server.
    ///
    /// # Errors
    /// As [`ShardedScan::next_page`].
    pub async fn collect(mut self) -> Result<Vec<Bytes>> {
        let mut all = Vec::new();
        while let Some((name, scan)) = self.scans.pop_front() {
            // Scan::collect keeps the keys `next` had already fetched.
            all.extend(scan.collect().await.map_err(|e| unavailable(&name, e))?);
        }
        Ok(all)
    }
}
