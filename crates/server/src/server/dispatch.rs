//! Executes one authenticated request against the store and appends the
//! encoded response to the connection's output buffer.

use bytes::Bytes;

use crate::protocol::{Request, Response, Status, encode_response, encode_response_header};
use crate::store::{Item, PersistOutcome, StoreError, VersionedDelete, Written};

use super::Shared;

/// Runs `request` and appends its response to `out`. For a write command,
/// returns the journal sequence number its answer depends on (0 when it
/// journaled nothing), which the session waits on under `--fsync always`;
/// `None` for a read.
pub(super) fn execute(shared: &Shared, request: Request, out: &mut Vec<u8>) -> Option<u64> {
    let is_write = request.is_write();
    let mut seq = 0;
    match run(shared, request, out, &mut seq) {
        Ok(Some(response)) => push(out, &response),
        Ok(None) => {}
        Err(e @ StoreError::OutOfMemory { .. }) => push(out, &Response::error("OOM", &e.to_string())),
        Err(e @ StoreError::Journal(_)) => push(out, &Response::error("IOERR", &e.to_string())),
    }
    is_write.then_some(seq)
}

/// The outcome of a store write, raising `seq` to the write's sequence number.
fn journaled<T>(written: Written<T>, seq: &mut u64) -> T {
    *seq = (*seq).max(written.seq);
    written.outcome
}

/// Executes one request; `Ok(None)` when the response was written directly.
fn run(shared: &Shared, request: Request, out: &mut Vec<u8>, seq: &mut u64) -> Result<Option<Response>, StoreError> {
    let store = &shared.store;
    let now = shared.config.clock.now_ms();
    let response = match request {
        Request::Get { key } => match store.get(&key, now) {
            // Written straight from the stored bytes: no intermediate Response.
            Some(item) => {
                write_ok(out, item.value());
                return Ok(None);
            }
            None => Response::not_found(),
        },
        Request::Set { key, value, ttl, condition } => {
            found(journaled(store.set(&key, &value, ttl, set_condition(condition), now)?, seq))
        }
        Request::Delete { key } => found(journaled(store.delete(&key, now)?, seq)),
        Request::GetVersioned { key } => match store.get(&key, now) {
            Some(item) => {
                let mut body = Vec::with_capacity(8 + item.value().len());
                body.extend_from_slice(&item.version().to_be_bytes());
                body.extend_from_slice(item.value());
                Response::ok(body)
            }
            None => Response::not_found(),
        },
        Request::SetIfVersion { key, value, ttl, version } => {
            let condition = crate::store::SetCondition::IfVersion(version);
            let written = store.set(&key, &value, ttl, condition, now)?;
            let new_version = written.seq;
            if journaled(written, seq) {
                Response::ok(Bytes::copy_from_slice(&new_version.to_be_bytes()))
            } else {
                conflict(version)
            }
        }
        Request::DeleteIfVersion { key, version } => match journaled(store.delete_if_version(&key, version, now)?, seq)
        {
            VersionedDelete::Deleted => Response::ok_empty(),
            VersionedDelete::Missing => Response::not_found(),
            VersionedDelete::Conflict => conflict(version),
        },
        Request::Exists { key } => found(store.exists(&key, now)),
        Request::Expire { key, ttl } => found(journaled(store.expire(&key, ttl, now)?, seq)),
        Request::Persist { key } => match journaled(store.persist(&key, now)?, seq) {
            PersistOutcome::Missing => Response::not_found(),
            PersistOutcome::Removed => Response::ok(Bytes::from_static(&[1])),
            PersistOutcome::HadNone => Response::ok(Bytes::from_static(&[0])),
        },
        Request::Ttl { key } => match store.expiry(&key, now) {
            None => Response::not_found(),
            Some(None) => Response::ok(Bytes::copy_from_slice(&(-1i64).to_be_bytes())),
            Some(Some(at)) => {
                let ns = i64::try_from(u128::from(at.saturating_sub(now)) * 1_000_000).unwrap_or(i64::MAX);
                Response::ok(Bytes::copy_from_slice(&ns.to_be_bytes()))
            }
        },
        Request::MGet { keys } => {
            let items: Vec<_> = keys.iter().map(|k| store.get(k, now)).collect();
            let values: Vec<Option<&[u8]>> = items.iter().map(|i| i.as_ref().map(Item::value)).collect();
            let total: usize = values.iter().flatten().map(|v| v.len()).sum();
            if total > shared.config.limits.max_value_len {
                Response::error(
                    "TOOBIG",
                    &format!(
                        "MGET values total {total} bytes, over the {}-byte limit; ask for fewer keys",
                        shared.config.limits.max_value_len
                    ),
                )
            } else {
                Response::mget(&values)
            }
        }
        Request::MSet { pairs, ttl } => {
            for (key, value) in pairs {
                journaled(store.set(&key, &value, ttl, crate::store::SetCondition::Always, now)?, seq);
            }
            Response::ok_empty()
        }
        Request::Ping { message } if message.is_empty() => Response::ok(Bytes::from_static(b"PONG")),
        Request::Ping { message } => Response::ok(message),
        Request::DbSize => Response::ok(Bytes::copy_from_slice(&(store.len() as u64).to_be_bytes())),
        Request::Info => {
            let log_buffer = shared.persistence.log().buffered_bytes();
            let mut info =
                shared.stats.render(store, shared.config.max_connections, shared.request_buffers.held(), log_buffer);
            info.push_str(&auth_info(shared));
            info.push_str(&format!("\n# Scans\nscan_cursors_open:{}\n", shared.scans.open_count()));
            info.push_str(&shared.persistence.info());
            Response::ok(info)
        }
        Request::Auth { .. }
        | Request::Save
        | Request::TokenAdd { .. }
        | Request::TokenList
        | Request::TokenRevoke { .. }
        | Request::ConfigGet { .. }
        | Request::ConfigSet { .. }
        | Request::Scan { .. } => session_only(),
    };
    Ok(Some(response))
}

/// The `# Auth` section of INFO.
fn auth_info(shared: &Shared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let a = &shared.auth;
    format!(
        "\n# Auth\ntokens:{}\nauth_failures:{}\nauth_lockouts:{}\nlocked_out_addresses:{}\nauth_refused_locked:{}\nauth_cache_hits:{}\nargon2_verifications:{}\n",
        a.token_count(),
        a.stats.failures.load(Relaxed),
        a.throttle().lockouts.load(Relaxed),
        a.throttle().locked_now(),
        a.stats.refused_locked.load(Relaxed),
        a.stats.cache_hits.load(Relaxed),
        a.stats.argon2_runs.load(Relaxed),
    )
}

fn conflict(expected: u64) -> Response {
    let what =
        if expected == 0 { "the key exists".to_string() } else { format!("the key's version is not {expected}") };
    Response::error("CONFLICT", &format!("{what}; nothing written"))
}

fn found(yes: bool) -> Response {
    if yes { Response::ok_empty() } else { Response::not_found() }
}

/// AUTH and SAVE wait on other tasks, so the session runs them; answering
/// here keeps the function total without a panic path.
fn session_only() -> Response {
    Response::error("ERR", "this command is handled by the session")
}

fn write_ok(out: &mut Vec<u8>, value: &[u8]) {
    out.reserve(crate::protocol::RESPONSE_HEADER_LEN + value.len());
    // Stored values passed the request limit, so they fit the u32 length.
    if encode_response_header(Status::Ok, value.len(), out).is_ok() {
        out.extend_from_slice(value);
    }
}

/// Appends an encoded response.
pub(super) fn push(out: &mut Vec<u8>, response: &Response) {
    // Bodies built here are bounded by the configured limits, far below u32::MAX.
    let _ = encode_response(response, out);
}

/// The store's condition for a SET's wire condition (the store knows no protocol types).
fn set_condition(condition: crate::protocol::SetCondition) -> crate::store::SetCondition {
    match condition {
        crate::protocol::SetCondition::Always => crate::store::SetCondition::Always,
        crate::protocol::SetCondition::IfAbsent => crate::store::SetCondition::IfAbsent,
        crate::protocol::SetCondition::IfPresent => crate::store::SetCondition::IfPresent,
    }
}
