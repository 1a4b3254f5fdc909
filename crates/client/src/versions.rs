//! Versions and compare-and-set: `GETV`, `SETV`, `DELETEV`, and
//! [`Client::update`], a read-modify-write that loses no concurrent update.
//!
//! A key's version is the server's sequence number of its last change:
//! never 0, larger after every change, kept across restarts. Version 0 in a
//! condition means "the key must not exist".

use std::time::Duration;

use cryptomem_wire::protocol::{Request, Status};

use crate::{Client, Error, Result, SetOptions};

/// Attempts [`Client::update`] makes before [`Error::Contended`].
pub const UPDATE_ATTEMPTS: u32 = 64;

impl Client {
    /// The opened value and its version, or `None` for a missing key.
    ///
    /// # Errors
    /// [`Error::NoValueKey`]; any other [`Error`].
    pub async fn get_versioned(&self, key: impl AsRef<[u8]>) -> Result<Option<(u64, Vec<u8>)>> {
        let key = key.as_ref();
        let keyring = self.keyring()?;
        let response = self.request(&Request::GetVersioned { key: self.wire_key(key) }).await?;
        if response.status != Status::Ok {
            return Ok(None);
        }
        let mut body = response.body;
        if body.len() < 8 {
            return Err(Error::Protocol("GETV reply is shorter than its version".into()));
        }
        let version = u64::from_be_bytes(body.split_to(8).as_ref().try_into().unwrap_or_default());
        Ok(Some((version, keyring.open(key, &body)?)))
    }

    /// Seals and stores `value` only if the key's version is `version` (0:
    /// only if the key does not exist); returns the key's new version.
    /// Version 0 back means an `allkeys-tinylfu` server did not admit the
    /// key (a cache may refuse a write).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the version differs (nothing was written; it
    /// is reported, never retried); any other [`Error`].
    pub async fn set_if_version(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        version: u64,
        options: SetOptions,
    ) -> Result<u64> {
        let key = key.as_ref();
        let sealed = self.keyring()?.seal(key, value.as_ref())?;
        let request =
            Request::SetIfVersion { key: self.wire_key(key), value: sealed.into(), ttl: options.ttl, version };
        let response = self.request(&request).await.map_err(conflict)?;
        let body: [u8; 8] =
            response.body.as_ref().try_into().map_err(|_| Error::Protocol("SETV reply is not 8 bytes".into()))?;
        Ok(u64::from_be_bytes(body))
    }

    /// Deletes the key only if its version is `version`; `Ok(false)` when
    /// the key does not exist and `version` is 0.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the version differs; any other [`Error`].
    pub async fn delete_if_version(&self, key: impl AsRef<[u8]>, version: u64) -> Result<bool> {
        let request = Request::DeleteIfVersion { key: self.wire_key(key.as_ref()), version };
        let response = self.request(&request).await.map_err(conflict)?;
        Ok(response.status == Status::Ok)
    }

    /// Read-modify-write without lost updates: reads the value and its
    /// version, calls `f` with the value (`None`: missing), and stores what
    /// `f` returns (`None`: delete) only if the key did not change
    /// meanwhile; on a conflict it starts over, after a short random pause
    /// that grows with each attempt. `f` may run more than once. Returns
    /// what was stored.
    ///
    /// # Errors
    /// [`Error::Contended`] after [`UPDATE_ATTEMPTS`] conflicts in a row;
    /// any other [`Error`] at once.
    pub async fn update<F>(&self, key: impl AsRef<[u8]>, mut f: F) -> Result<Option<Vec<u8>>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        let key = key.as_ref();
        for attempt in 0..UPDATE_ATTEMPTS {
            let current = self.get_versioned(key).await?;
            let version = current.as_ref().map_or(0, |(v, _)| *v);
            let new = f(current.as_ref().map(|(_, value)| value.as_slice()));
            let stored = match &new {
                Some(value) => self.set_if_version(key, value, version, SetOptions::default()).await.map(drop),
                None if version == 0 => return Ok(None),
                None => self.delete_if_version(key, version).await.map(drop),
            };
            match stored {
                Ok(()) => return Ok(new),
                Err(Error::Conflict(_)) => {
                    let most = 100u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=most))).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended { attempts: UPDATE_ATTEMPTS })
    }
}

/// A `CONFLICT` reply as [`Error::Conflict`].
fn conflict(e: Error) -> Error {
    match e {
        Error::Server { code, message } if code == "CONFLICT" => Error::Conflict(message),
        other => other,
    }
}
