//! Just enough of a Redis client for `replay`: pipelined GET and SET over one
//! plain TCP connection (RESP2).
//!
//! Written here because the `redis` crate, even without default features,
//! adds 42 crates (url, ICU) to every build of this tool for two commands.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest bulk reply accepted: a value from the benchmark, never more.
const MAX_BULK: usize = 64 << 20;

/// One connection.
pub struct Redis {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Redis {
    /// Connects to `addr`.
    pub async fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::new(stream), out: Vec::new(), line: Vec::new() })
    }

    /// GETs every key in one round trip; whether each was found.
    pub async fn get_all(&mut self, keys: &[&[u8]]) -> io::Result<Vec<bool>> {
        for key in keys {
            self.command(&[b"GET", key]);
        }
        self.send().await?;
        let mut found = Vec::with_capacity(keys.len());
        for _ in keys {
            found.push(self.reply().await?);
        }
        Ok(found)
    }

    /// SETs every pair in one round trip.
    pub async fn set_all(&mut self, pairs: &[(&[u8], &[u8])]) -> io::Result<()> {
        for (key, value) in pairs {
            self.command(&[b"SET", key, value]);
        }
        self.send().await?;
        for _ in pairs {
            self.reply().await?;
        }
        Ok(())
    }

    /// Queues one command.
    fn command(&mut self, args: &[&[u8]]) {
        self.out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn send(&mut self) -> io::Result<()> {
        self.stream.get_mut().write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Reads one reply: true for a value or `+OK`, false for a nil.
    async fn reply(&mut self) -> io::Result<bool> {
        self.line.clear();
        self.stream.read_until(b'\n', &mut self.line).await?;
        let line = self.line.strip_suffix(b"\r\n").ok_or_else(|| bad("reply line without CRLF"))?;
        match line.first() {
            Some(b'+') => Ok(true),
            Some(b'-') => Err(io::Error::other(format!("redis: {}", String::from_utf8_lossy(&line[1..])))),
            Some(b'$') if line == b"$-1" => Ok(false),
            Some(b'$') => {
                let len: usize = std::str::from_utf8(&line[1..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n <= MAX_BULK)
                    .ok_or_else(|| bad("bad bulk length"))?;
                let mut body = vec![0; len + 2];
                self.stream.read_exact(&mut body).await?;
                Ok(true)
            }
            _ => Err(bad("unexpected reply")),
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis: {what}"))
}
