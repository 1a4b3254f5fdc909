//! One client connection: handshake, AUTH, then the request loop.
//!
//! The loop reads whatever the socket has, opens every complete record,
//! executes every complete request in order, and sends all their responses
//! sealed in one write. A pipelining client therefore costs one read, one
//! write and a few records per batch, not per request.
//!
//! Buffers stay bounded: ciphertext in flight is at most one read beyond one
//! record; buffered plaintext is at most one request (whose declared size was
//! checked against the limits) plus one read; output is flushed whenever it
//! passes [`FLUSH_AT`].
//!
//! A request must also arrive in time: from the read that brings its first
//! byte, the rest must follow within `request_timeout` (answered `TIMEOUT`,
//! then closed), and what every connection holds for requests still arriving
//! counts against one server-wide cap ([`super::request_buffers`]; answered
//! `BUSY`, then closed). The idle timer alone restarts on every byte, so it
//! cannot stop a client that trickles a large value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use crate::auth::{AuthError, Principal};
use crate::persist::{FsyncPolicy, LogError};
use crate::protocol::{Decoded, FrameError, Request, Response, Runs, decode_request};
use crate::secure::{ChannelReader, ChannelWriter, SecureError, channel, server_handshake};

use super::Shared;
use super::dispatch::{execute, push};
use super::metrics::AuthOutcome;
use super::request_buffers::BufferClaim;
use super::stats::bump;

/// Output size at which responses are sent before more requests are executed.
pub const FLUSH_AT: usize = 1 << 20;
const READ_CHUNK: usize = crate::secure::channel::READ_CHUNK;
/// Buffers that grew past this for one large request are given back afterwards.
const SHRINK_ABOVE: usize = 4 << 20;
/// Bound on one write to a client that stopped reading, when no idle timeout is set.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// A write's response waiting for its records to be fsynced.
struct PendingWrite {
    /// Its bytes in `plain_out`.
    response: std::ops::Range<usize>,
    /// The sequence number of its last record; 0 if it journaled nothing.
    seq: u64,
}

/// Why the request loop stops.
enum Next {
    Continue,
    Close,
}

struct Session {
    reader: ChannelReader<OwnedReadHalf>,
    writer: ChannelWriter<OwnedWriteHalf>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    plain_out: Vec<u8>,
    principal: Option<Principal>,
    /// When an unauthenticated connection must have completed AUTH.
    auth_deadline: Instant,
    /// With `fsync always`: where each write's response lies in `plain_out`
    /// and the sequence number of its last record, so that when
    /// the log fails exactly the writes not made durable answer `IOERR`.
    pending_writes: Vec<PendingWrite>,
    /// The token table generation `principal` was read at.
    seen_generation: u64,
    /// When the read that began the request still arriving came in.
    request_started: Option<Instant>,
    /// Whether a request was decoded since `request_started` was last set:
    /// then the bytes still arriving belong to a later request.
    request_completed: bool,
    /// This connection's share of the server-wide cap on incomplete requests.
    buffered: BufferClaim,
}

/// Serves one accepted connection until it closes, fails, or the server shuts down.
pub(super) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let keys = match timeout_at(
        deadline,
        server_handshake(&mut stream, &shared.keys.load().accepted(shared.config.clock.now_ms())),
    )
    .await
    {
        Ok(Ok(keys)) => keys,
        Ok(Err(e)) => {
            // Debug, not info: scanners and floods would fill the log; INFO counts them.
            bump(&shared.stats.handshake_failures);
            debug!(%peer, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            bump(&shared.stats.handshake_failures);
            debug!(%peer, "handshake timed out");
            return;
        }
    };
    let auth_window = shared.config.handshake_timeout;
    let (read, write) = stream.into_split();
    let (reader, writer) = channel(read, write, keys);
    let mut session = Session {
        reader,
        writer,
        peer,
        plain_out: Vec::new(),
        principal: None,
        // AUTH must arrive and be verified within a second handshake timeout.
        auth_deadline: Instant::now() + auth_window,
        pending_writes: Vec::new(),
        seen_generation: 0,
        request_started: None,
        request_completed: false,
        buffered: BufferClaim::new(Arc::clone(&shared.request_buffers)),
        shared,
    };
    if let Err(e) = session.run(&mut shutdown).await {
        debug!(%peer, error = %e, "connection closed with an error");
    }
}

impl Session {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SecureError> {
        loop {
            let next = self.process_buffered().await?;
            if !self.flush_when_durable().await? {
                return Ok(());
            }
            if matches!(next, Next::Close) {
                return Ok(());
            }
            if !self.account_incomplete().await? {
                return Ok(());
            }
            let deadline = self.read_deadline();
            let read = self.reader.fill();
            let filled = tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                r = async { match deadline { Some(d) => timeout_at(d, read).await.ok(), None => Some(read.await) } } => match r {
                    None => {
                        self.timed_out().await?;
                        return Ok(());
                    }
                    Some(result) => result,
                },
            };
            match filled {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(SecureError::Io(e)) => return Err(SecureError::Io(e)),
                Err(e) => {
                    bump(&self.shared.stats.protocol_errors);
                    info!(peer = %self.peer, error = %e, "closing: bad record");
                    // The records before the bad one were intact: answer their
                    // requests, in order, then the error, so a pipelining client
                    // pins it on the right request.
                    if let Next::Continue = self.process_buffered().await? {
                        push(&mut self.plain_out, &Response::error("PROTO", &e.to_string()));
                    }
                    self.flush_when_durable().await?;
                    return Ok(());
                }
            }
        }
    }

    /// Counts what is buffered for a request still arriving against the
    /// server-wide cap and notes when that request began. Returns false (after
    /// answering `BUSY`) when the connection must close.
    async fn account_incomplete(&mut self) -> Result<bool, SecureError> {
        let incomplete = self.reader.buffered();
        let next_request = std::mem::take(&mut self.request_completed);
        if incomplete == 0 {
            self.request_started = None;
        } else if self.request_started.is_none() || next_request {
            self.request_started = Some(Instant::now());
        }
        let Err(over) = self.buffered.set(incomplete) else { return Ok(true) };
        bump(&self.shared.stats.requests_refused_buffer_full);
        warn!(peer = %self.peer, limit = over.limit, "closing: incomplete requests of all connections exceed --request-buffer-limit");
        let message = format!(
            "incomplete requests of all connections are over the server's {}-byte limit; retry later",
            over.limit
        );
        push(&mut self.plain_out, &Response::error("BUSY", &message));
        self.flush().await?;
        Ok(false)
    }

    /// When the next read must have arrived: AUTH's deadline before
    /// authentication, then the idle timeout, and no later than the request
    /// timeout while a request is arriving.
    fn read_deadline(&self) -> Option<Instant> {
        let config = &self.shared.config;
        let waiting = match (&self.principal, config.idle_timeout) {
            (None, _) => Some(self.auth_deadline),
            (Some(_), Some(idle)) => Some(Instant::now() + idle),
            (Some(_), None) => None,
        };
        let request = self.request_started.zip(config.request_timeout).map(|(started, limit)| started + limit);
        match (waiting, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The read deadline passed: a request that began too long ago is
    /// answered `TIMEOUT`; an idle connection just closes.
    async fn timed_out(&mut self) -> Result<(), SecureError> {
        let limit = self.shared.config.request_timeout;
        let late = self.request_started.zip(limit).filter(|(started, limit)| started.elapsed() >= *limit);
        match late {
            Some((_, limit)) if self.principal.is_some() => {
                bump(&self.shared.stats.requests_timed_out);
                info!(peer = %self.peer, "closing: request not received in full within --request-timeout");
                let message = format!("request not received in full within {}s", limit.as_secs_f64());
                push(&mut self.plain_out, &Response::error("TIMEOUT", &message));
                self.flush().await
            }
            _ => {
                debug!(peer = %self.peer, authenticated = self.principal.is_some(), "closing: timed out waiting for a request");
                Ok(())
            }
        }
    }

    /// Executes every complete request in the input buffer.
    async fn process_buffered(&mut self) -> Result<Next, SecureError> {
        loop {
            if self.plain_out.len() >= FLUSH_AT && !self.flush_when_durable().await? {
                return Ok(Next::Close);
            }
            let decoded = match decode_request(self.reader.plaintext(), &self.shared.config.limits) {
                Ok(Some(d)) => {
                    self.request_completed = true;
                    d
                }
                Ok(None) => {
                    return Ok(Next::Continue);
                }
                Err(e) => {
                    bump(&self.shared.stats.protocol_errors);
                    info!(peer = %self.peer, error = %e, "closing: unframeable request");
                    let code = if matches!(e, FrameError::TooLarge { .. }) { "TOOBIG" } else { "PROTO" };
                    push(&mut self.plain_out, &Response::error(code, &e.to_string()));
                    return Ok(Next::Close);
                }
            };
            match decoded {
                Decoded::Rejected(e) => {
                    push(&mut self.plain_out, &Response::error("ERR", &e.0));
                    if self.principal.is_none() {
                        return Ok(Next::Close);
                    }
                }
                Decoded::Request(Request::Auth { token }) => {
                    if let Next::Close = self.authenticate(&token).await {
                        return Ok(Next::Close);
                    }
                }
                Decoded::Request(request) => {
                    let was_authenticated = self.principal.is_some();
                    self.refresh_principal();
                    let Some(verdict) = self.principal.as_ref().map(|p| p.check(&request)) else {
                        let message = if was_authenticated {
                            "this connection's token was revoked"
                        } else {
                            "authentication required: the first request must be AUTH"
                        };
                        push(&mut self.plain_out, &Response::error("NOAUTH", message));
                        return Ok(Next::Close);
                    };
                    bump(&self.shared.stats.commands_processed);
                    let code = request.command().code;
                    if let Err(why) = verdict {
                        push(&mut self.plain_out, &Response::error("NOPERM", &why.to_string()));
                        if let Some(m) = &self.shared.metrics {
                            m.refused(code, "NOPERM");
                        }
                        continue;
                    }
                    let timed = self.shared.metrics.as_ref().map(|_| (self.plain_out.len(), std::time::Instant::now()));
                    match request.command().runs {
                        Runs::Session => {
                            let response = self.admin(request).await;
                            push(&mut self.plain_out, &response);
                        }
                        Runs::Store => {
                            if request.command().writes && self.shared.persistence.log().backlogged() {
                                // A disk behind the writes slows writers to its pace;
                                // the replies ready so far go out before the wait.
                                if !self.flush_when_durable().await? {
                                    return Ok(Next::Close);
                                }
                                self.shared.persistence.log().wait_for_room().await;
                            }
                            let start = self.plain_out.len();
                            let written = execute(&self.shared, request, &mut self.plain_out);
                            if let Some(seq) = written
                                && self.shared.persistence.log().policy() == FsyncPolicy::Always
                            {
                                let response = start..self.plain_out.len();
                                self.pending_writes.push(PendingWrite { response, seq });
                            }
                        }
                    }
                    if let (Some(m), Some((start, began))) = (&self.shared.metrics, timed) {
                        m.command(code, &self.plain_out[start..], began.elapsed());
                    }
                }
            }
        }
    }

    /// Re-reads the connection's rights if the token table changed since they
    /// were read (one atomic load otherwise); clears them if the token was revoked.
    fn refresh_principal(&mut self) {
        let Some(principal) = &self.principal else { return };
        let generation = self.shared.auth.generation();
        if generation == self.seen_generation {
            return;
        }
        let refreshed = self.shared.auth.principal_for(&principal.token_id);
        if refreshed.is_none() {
            info!(peer = %self.peer, token_id = %principal.token_id, "closing a connection whose token was revoked");
        }
        self.principal = refreshed;
        self.seen_generation = generation;
    }

    /// SAVE and token management: they wait on disk or argon2, so they run here.
    async fn admin(&mut self, request: Request) -> Response {
        let auth = &self.shared.auth;
        match request {
            Request::Save => match self.shared.persistence.snapshot().await {
                Ok(header) => Response::ok(bytes::Bytes::copy_from_slice(&header.cut_seq.to_be_bytes())),
                Err(e) => Response::error("IOERR", &format!("snapshot failed: {e}")),
            },
            Request::TokenAdd { role, prefixes, label } => match auth.add_token(role, prefixes, label).await {
                Ok(token) => {
                    info!(peer = %self.peer, token_id = %token.id(), role = ?role, "token added");
                    Response::ok(token.expose().as_bytes().to_vec())
                }
                Err(e) => Response::error("ERR", &e.to_string()),
            },
            Request::TokenList => Response::ok(crate::auth::table::listing_toml(&auth.list())),
            Request::TokenRevoke { id } => match auth.revoke(&id).await {
                Ok(true) => {
                    info!(peer = %self.peer, token_id = %id, "token revoked");
                    Response::ok_empty()
                }
                Ok(false) => Response::not_found(),
                Err(e) => Response::error("ERR", &e.to_string()),
            },
            Request::ConfigGet { name } => match super::config_command::get(&self.shared.store, &name) {
                Ok(value) => Response::ok(value.into_bytes()),
                Err(e) => Response::error("ERR", &e.to_string()),
            },
            Request::ConfigSet { name, value } => self.config_set(&name, &value).await,
            Request::Scan { cursor, count, prefix } => match &self.principal {
                Some(who) => {
                    let now = self.shared.config.clock.now_ms();
                    let max_bytes = self.shared.config.limits.max_value_len;
                    self.shared.scans.page(&self.shared.store, who, cursor, count, prefix, now, max_bytes)
                }
                None => Response::error("NOAUTH", "authentication required"),
            },
            _ => Response::error("ERR", "not an administrative command"),
        }
    }

    /// CONFIG SET; a lower limit is applied at once, evicting on a blocking
    /// thread (a large keyspace takes a while) before the answer.
    async fn config_set(&mut self, name: &str, value: &str) -> Response {
        let store = &self.shared.store;
        match super::config_command::set(store, name, value) {
            Err(e) => Response::error("ERR", &e.to_string()),
            Ok(false) => Response::ok_empty(),
            Ok(true) => {
                info!(peer = %self.peer, setting = name, value, "CONFIG SET");
                let store = Arc::clone(store);
                let now = self.shared.config.clock.now_ms();
                match tokio::task::spawn_blocking(move || store.evict_to_limit(now)).await {
                    Ok(Ok(_)) => Response::ok_empty(),
                    Ok(Err(e)) => Response::error("OOM", &format!("set, but still over the limit: {e}")),
                    Err(_) => Response::error("ERR", "eviction stopped unexpectedly"),
                }
            }
        }
    }

    fn count_auth(&self, outcome: AuthOutcome) {
        if let Some(m) = &self.shared.metrics {
            m.auth(outcome);
        }
    }

    async fn authenticate(&mut self, token: &[u8]) -> Next {
        bump(&self.shared.stats.commands_processed);
        // Waiting for an argon2 slot is bounded too: under an AUTH flood a
        // connection is told to come back rather than parked indefinitely.
        let deadline = match self.principal {
            None => self.auth_deadline,
            Some(_) => Instant::now() + self.shared.config.handshake_timeout,
        };
        let Ok(verdict) = timeout_at(deadline, self.shared.auth.authenticate(token, self.peer.ip())).await else {
            auth_failure(self.peer, "overloaded");
            self.count_auth(AuthOutcome::Overloaded);
            push(&mut self.plain_out, &Response::error("BUSY", "authentication is overloaded; retry later"));
            return Next::Close;
        };
        match verdict {
            Ok(principal) => {
                debug!(peer = %self.peer, token_id = %principal.token_id, "authenticated");
                self.seen_generation = self.shared.auth.generation();
                self.principal = Some(principal);
                self.count_auth(AuthOutcome::Ok);
                push(&mut self.plain_out, &Response::ok_empty());
                Next::Continue
            }
            Err(e) => {
                let (reason, outcome) = match e {
                    AuthError::InvalidToken => ("invalid_token", AuthOutcome::InvalidToken),
                    AuthError::LockedOut(_) => ("locked_out", AuthOutcome::LockedOut),
                    AuthError::Unavailable => ("unavailable", AuthOutcome::Unavailable),
                };
                auth_failure(self.peer, reason);
                self.count_auth(outcome);
                let response = match e {
                    AuthError::InvalidToken => Response::error("WRONGPASS", "invalid token"),
                    AuthError::LockedOut(_) => Response::error("LOCKED", &e.to_string()),
                    AuthError::Unavailable => Response::error("BUSY", &e.to_string()),
                };
                push(&mut self.plain_out, &response);
                Next::Close
            }
        }
    }

    /// Sends the pending responses, first waiting (with `--fsync always`) until
    /// the writes among them are fsynced. If the log fails first, each write
    /// whose records are not durable answers `IOERR` instead of its response
    /// and everything else is sent as it was; then the connection closes
    /// (the server is stopping). Returns false when the connection must close.
    async fn flush_when_durable(&mut self) -> Result<bool, SecureError> {
        let mut keep_open = true;
        let bound = self.pending_writes.iter().map(|w| w.seq).max().unwrap_or(0);
        if bound > 0 {
            let log = self.shared.persistence.log();
            if let Err(e) = log.wait_durable(bound).await {
                let durable = log.status().durable_seq;
                self.refuse_not_durable(durable, &e);
                keep_open = false;
            }
        }
        self.pending_writes.clear();
        self.flush().await?;
        Ok(keep_open)
    }

    /// Replaces the response of every pending write whose records may be
    /// above `durable` with `IOERR`.
    fn refuse_not_durable(&mut self, durable: u64, error: &LogError) {
        let refusal = Response::error("IOERR", &format!("not durable, so not applied after restart: {error}"));
        let old = std::mem::take(&mut self.plain_out);
        let mut copied = 0;
        let mut refused = 0;
        for w in self.pending_writes.iter().filter(|w| w.seq > durable) {
            self.plain_out.extend_from_slice(&old[copied..w.response.start]);
            push(&mut self.plain_out, &refusal);
            copied = w.response.end;
            refused += 1;
        }
        self.plain_out.extend_from_slice(&old[copied..]);
        debug!(peer = %self.peer, refused, "writes answered IOERR: the log failed before they were durable");
    }

    /// Seals and sends everything in the output buffer, in one write.
    async fn flush(&mut self) -> Result<(), SecureError> {
        if self.plain_out.is_empty() {
            return Ok(());
        }
        let limit = self.shared.config.idle_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT);
        let sent = tokio::time::timeout(limit, self.writer.send(&self.plain_out)).await;
        self.plain_out.clear();
        match sent {
            Ok(result) => result?,
            Err(_) => {
                return Err(SecureError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading",
                )));
            }
        }
        shrink_if_huge(&mut self.plain_out);
        Ok(())
    }
}

/// Gives back an output buffer that grew for one large reply (the channel
/// does the same for its own buffers).
fn shrink_if_huge(buf: &mut Vec<u8>) {
    if buf.capacity() > SHRINK_ABOVE && buf.len() < SHRINK_ABOVE / 4 {
        buf.shrink_to(READ_CHUNK);
    }
}

/// Turns away a connection at the connection limit without spending a task on it.
pub(super) fn reject_busy(stream: &TcpStream) {
    // Best effort: if the 3 bytes do not fit the socket buffer right now, the
    // client just sees the connection close.
    let _ = stream.try_write(&[0, 0, crate::secure::RejectReason::Busy as u8]);
}

/// The auth-failure log line, in a format kept stable for tools such as
/// fail2ban (`tools/service/fail2ban-cryptomem.conf`): level `WARN`, target
/// `cryptomem::auth`, message `auth_failure`, then `ip=<address>
/// port=<port> reason=<invalid_token|locked_out|overloaded|unavailable>`.
/// Never the token or any part of it.
fn auth_failure(peer: std::net::SocketAddr, reason: &'static str) {
    warn!(target: "cryptomem::auth", ip = %peer.ip(), port = peer.port(), reason = %reason, "auth_failure");
}
