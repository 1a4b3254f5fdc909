//! The server-wide cap on memory held for requests still arriving.
//!
//! A token holder can open many connections and send each a large request a
//! byte at a time. Every such connection buffers what it has so far, so
//! without a shared cap 100 clients trickling 16 MiB values hold 1.6 GB.
//! Each session counts the bytes it holds for incomplete requests (opened
//! plaintext plus ciphertext not yet forming a whole record) in one
//! [`RequestBuffers`]; a session whose request grows while the total is over
//! the cap is answered `BUSY` and closed, which gives its bytes back. The
//! per-request deadline (`--request-timeout`) bounds how long any connection
//! can keep its share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared count and its limit.
#[derive(Debug)]
pub struct RequestBuffers {
    held: AtomicUsize,
    limit: usize,
}

impl RequestBuffers {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { held: AtomicUsize::new(0), limit })
    }

    /// Bytes held for incomplete requests by every connection together.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One session's share; dropping it gives the share back.
#[derive(Debug)]
pub struct BufferClaim {
    buffers: Arc<RequestBuffers>,
    mine: usize,
}

/// The session's request grew while every connection together already held
/// more than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// The cap in bytes.
    pub limit: usize,
}

impl BufferClaim {
    /// An empty share of `buffers`.
    pub fn new(buffers: Arc<RequestBuffers>) -> Self {
        Self { buffers, mine: 0 }
    }

    /// Records that this session now holds `bytes` for incomplete requests.
    ///
    /// # Errors
    /// [`OverLimit`] when the share grew and the total is now over the cap;
    /// the new amount is counted all the same (dropping the claim returns it).
    pub fn set(&mut self, bytes: usize) -> Result<(), OverLimit> {
        let before = self.mine;
        self.mine = bytes;
        if bytes <= before {
            self.buffers.held.fetch_sub(before - bytes, Ordering::Relaxed);
            return Ok(());
        }
        let total = self.buffers.held.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before);
        if total > self.buffers.limit { Err(OverLimit { limit: self.buffers.limit }) } else { Ok(()) }
    }
}

impl Drop for BufferClaim {
    fn drop(&mut self) {
        self.buffers.held.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_past_the_cap_is_refused_and_dropping_gives_it_back() {
        let buffers = RequestBuffers::new(100);
        let mut a = BufferClaim::new(Arc::clone(&buffers));
        let mut b = BufferClaim::new(Arc::clone(&buffers));
        assert_eq!(a.set(60), Ok(()));
        assert_eq!(b.set(40), Ok(()));
        assert_eq!(b.set(41), Err(OverLimit { limit: 100 }));
        assert_eq!(buffers.held(), 101);
        // Shrinking is always allowed, even while over the cap.
        assert_eq!(a.set(70), Err(OverLimit { limit: 100 }));
        assert_eq!(a.set(10), Ok(()));
        drop(b);
        assert_eq!(buffers.held(), 10);
        drop(a);
        assert_eq!(buffers.held(), 0);
    }
}
