//! Test harness: a real server on 127.0.0.1, port 0, with a fresh data dir.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, ClientConfig};
use cryptomem_server::auth::{HashParams, Token};
use cryptomem_server::server::DataDir;
use cryptomem_server::server::{Server, ServerConfig};
use cryptomem_server::store::{Clock, Store};
use cryptomem_wire::protocol::{Request, Response, decode_response, encode_request};
use cryptomem_wire::secure::{ChannelReader, ChannelWriter, channel, client_handshake};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use x25519_dalek::PublicKey;

pub struct TestServer {
    pub addr: SocketAddr,
    pub public_key: PublicKey,
    pub token: Token,
    pub store: Arc<Store>,
    pub clock: Clock,
    pub data_dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), cryptomem_server::server::ServerError>>>,
    dir: Arc<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has changed the default config.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().unwrap()), None, adjust).await
    }

    /// Starts a server on `dir/data`; `token` is the admin token of an existing data dir.
    pub async fn start_in(
        dir: Arc<tempfile::TempDir>,
        token: Option<Token>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            clock: Clock::manual(),
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let (data, report) = DataDir::open_or_init(&config.data_dir, HashParams::default()).unwrap();
        let token = token.or_else(|| report.map(|r| r.admin_token)).expect("a token for this data dir");
        let public_key = data.identity().public();
        let clock = config.clock.clone();
        let data_dir = config.data_dir.clone();
        let server = Server::bind(config, data).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = server.local_addr().unwrap();
        let store = server.store();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self { addr, public_key, token, store, clock, data_dir, stop: Some(stop), task: Some(task), dir }
    }

    /// Stops gracefully and starts again on the same data dir.
    pub async fn restart(self, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let (dir, token) = (Arc::clone(&self.dir), self.token.clone());
        self.stop().await;
        Self::start_in(dir, Some(token), adjust).await
    }

    pub fn keyring() -> Keyring {
        Keyring::new(ValueKey::from_bytes([7; 32]))
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(self.addr.to_string(), self.public_key, self.token.clone()).with_keyring(Self::keyring())
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.config()).await.unwrap()
    }

    /// The temp dir holding the data dir, to start another server on it.
    pub fn tempdir(&self) -> Arc<tempfile::TempDir> {
        Arc::clone(&self.dir)
    }

    /// Stops without the graceful path (no final snapshot, the log as the
    /// writer left it), like a kill, and waits until the data dir is free.
    pub async fn crash(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        for _ in 0..250 {
            if cryptomem_server::server::lock_data_dir(&self.data_dir).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the aborted server never released {}", self.data_dir.display());
    }

    /// Waits (up to 20 s) for the server to stop on its own, and returns how it ended.
    pub async fn exited(mut self) -> Result<(), cryptomem_server::server::ServerError> {
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("server stops by itself").unwrap()
    }

    /// Stops the server and waits for it to finish draining.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops").unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A hand-driven connection for sending what a well-behaved client would not.
pub struct RawConn {
    reader: ChannelReader<OwnedReadHalf>,
    writer: ChannelWriter<OwnedWriteHalf>,
}

impl RawConn {
    /// Connects and completes the handshake, without AUTH.
    pub async fn handshaken(server: &TestServer) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let keys = client_handshake(&mut stream, &server.public_key).await.unwrap();
        let (read, write) = stream.into_split();
        let (reader, writer) = channel(read, write, keys);
        Self { reader, writer }
    }

    /// Connects, handshakes and authenticates.
    pub async fn authed(server: &TestServer) -> Self {
        let mut c = Self::handshaken(server).await;
        let r = c.call(&Request::Auth { token: c_token(server) }).await.expect("AUTH answered");
        assert_eq!(r, Response::ok_empty());
        c
    }

    /// Seals `plain` into records and sends them.
    pub async fn send_plain(&mut self, plain: &[u8]) {
        self.writer.send(plain).await.unwrap();
    }

    /// Seals `plain` into records without sending them.
    pub fn seal_plain(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        self.writer.seal_into(plain, &mut wire).unwrap();
        wire
    }

    /// Encodes and seals `request` into wire bytes without sending them.
    pub fn seal(&mut self, request: &Request) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_request(request, &mut frame).unwrap();
        self.seal_plain(&frame)
    }

    /// Writes bytes to the socket as they are (already sealed, or not).
    pub async fn write_wire(&mut self, wire: &[u8]) -> std::io::Result<()> {
        self.writer.get_mut().write_all(wire).await
    }

    /// Closes the sending direction.
    pub async fn shutdown(&mut self) {
        self.writer.get_mut().shutdown().await.unwrap();
    }

    pub async fn send(&mut self, request: &Request) {
        let mut frame = Vec::new();
        encode_request(request, &mut frame).unwrap();
        self.send_plain(&frame).await;
    }

    /// The next response, or `None` once the server has closed the connection.
    pub async fn recv(&mut self) -> Option<Response> {
        let fut = async {
            loop {
                if let Some(r) = decode_response(self.reader.plaintext(), 1 << 30).unwrap() {
                    return Some(r);
                }
                match self.reader.fill().await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), fut).await.expect("server answers or closes within 10 s")
    }

    pub async fn call(&mut self, request: &Request) -> Option<Response> {
        self.send(request).await;
        self.recv().await
    }

    /// Asserts the server closes the connection (after any responses).
    pub async fn assert_closed(&mut self) {
        assert!(self.recv().await.is_none(), "expected the server to close the connection");
    }
}

pub fn c_token(server: &TestServer) -> bytes::Bytes {
    bytes::Bytes::from(server.token.expose().as_bytes().to_vec())
}

/// Asserts a response is an error with `code`.
pub fn assert_error(response: Option<Response>, code: &str) {
    let response = response.expect("a response before the close");
    let (got, message) = response.error_parts().unwrap_or_else(|| panic!("expected {code}, got {response:?}"));
    assert_eq!(got, code, "message: {message}");
}

/// Polls `check` every 20 ms for up to 5 s.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Polls the async `check` every 20 ms for up to 5 s.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..250 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The value of `field` in an INFO text (`field:value` lines), or "" if absent.
pub fn info_field(info: &str, field: &str) -> String {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).unwrap_or_default().to_string()
}
