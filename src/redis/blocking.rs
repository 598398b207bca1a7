//! The presence thread's own Redis connection: blocking (the presence thread is not a
//! shard, so it may wait on Redis), pipelined (a `Pipe` of any number of commands is one
//! write and one read pass), with connect/read timeouts and capped exponential backoff
//! between reconnect attempts so a Redis outage never makes it spin. Plain TCP, or TLS
//! for `rediss://` (a `rustls::StreamOwned`, handshake done at connect).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::config::backoff;
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

/// Connect and per-read/write timeout.
/// See `config::Tuning`.
const IO_TIMEOUT: Duration = crate::config::TUNING.presence_io_timeout;

/// Commands to send in one round trip.
#[derive(Default)]
pub struct Pipe {
    buf: BytesMut,
    n: usize,
    /// Where each command ends in `buf`, and where its key (the second argument) is:
    /// what the cluster client (`cluster_blocking`) splits a pipe by. No copy.
    ends: Vec<usize>,
    keys: Vec<Option<(usize, usize)>>,
}

impl Pipe {
    pub fn cmd(&mut self, args: &[&[u8]]) {
        let start = self.buf.len();
        resp::encode(&mut self.buf, args);
        self.n += 1;
        self.ends.push(self.buf.len());
        // `*N\r\n$L0\r\narg0\r\n$L1\r\n` comes before the key.
        let key = args.get(1).map(|k| {
            let head = 3 + digits(args.len()) + 3 + digits(args[0].len()) + args[0].len() + 2;
            let at = start + head + 1 + digits(k.len()) + 2;
            (at, at + k.len())
        });
        self.keys.push(key);
    }

    /// Command `i`'s encoded bytes and key.
    pub fn command(&self, i: usize) -> (&[u8], Option<&[u8]>) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        let key = self.keys[i].map(|(a, b)| &self.buf[a..b]);
        (&self.buf[start..self.ends[i]], key)
    }

    /// Appends command `i` of `other`.
    pub fn copy(&mut self, other: &Pipe, i: usize) {
        let start = if i == 0 { 0 } else { other.ends[i - 1] };
        let shift = self.buf.len();
        self.buf.extend_from_slice(&other.buf[start..other.ends[i]]);
        self.n += 1;
        self.ends.push(self.buf.len());
        self.keys
            .push(other.keys[i].map(|(a, b)| (a - start + shift, b - start + shift)));
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Drop for Stream {
    /// Says goodbye (`close_notify`) on a TLS connection, best effort.
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.write_tls(&mut s.sock);
        }
    }
}

struct Conn {
    stream: Stream,
    rbuf: BytesMut,
}

/// A reconnecting connection.
pub struct Client {
    url: RedisUrl,
    conn: Option<Conn>,
    attempt: u32,
    retry_at: Instant,
}

impl Client {
    pub fn new(url: RedisUrl) -> Client {
        Client {
            url,
            conn: None,
            attempt: 0,
            retry_at: Instant::now(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.conn.is_some()
    }

    /// Connects if down and a retry is due. `Ok(true)`: a new connection was made.
    pub fn ensure(&mut self) -> io::Result<bool> {
        if self.conn.is_some() {
            return Ok(false);
        }
        if Instant::now() < self.retry_at {
            return Err(ErrorKind::NotConnected.into());
        }
        match self.connect() {
            Ok(c) => {
                self.conn = Some(c);
                self.attempt = 0;
                Ok(true)
            }
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    fn fail(&mut self) {
        self.conn = None;
        self.retry_at = Instant::now() + backoff(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
    }

    fn connect(&self) -> io::Result<Conn> {
        let addr = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "Redis host has no address"))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let stream = match &self.url.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let mut session = tls.session(&self.url.host)?;
                let mut tcp = stream;
                while session.is_handshaking() {
                    session.complete_io(&mut tcp).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "TLS handshake with {}:{} failed: {e}",
                                self.url.host, self.url.port
                            ),
                        )
                    })?;
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        };
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
        };
        let mut hello = Pipe::default();
        if let Some(pw) = &self.url.password {
            match &self.url.username {
                Some(user) => hello.cmd(&[b"AUTH", user.as_bytes(), pw.as_bytes()]),
                None => hello.cmd(&[b"AUTH", pw.as_bytes()]),
            }
        }
        if let Some(db) = self.url.db {
            hello.cmd(&[b"SELECT", db.to_string().as_bytes()]);
        }
        if !hello.is_empty() {
            for v in conn.exchange(&hello)? {
                if let Value::Error(e) = v {
                    let why = String::from_utf8_lossy(&e).into_owned();
                    return Err(io::Error::new(ErrorKind::PermissionDenied, why));
                }
            }
        }
        Ok(conn)
    }

    /// Sends every command of `pipe` and returns their replies in order. On an I/O
    /// error the connection is dropped (the next call reconnects after backoff).
    pub fn run(&mut self, pipe: &Pipe) -> io::Result<Vec<Value>> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(ErrorKind::NotConnected.into());
        };
        match conn.exchange(pipe) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }
}

impl Conn {
    fn exchange(&mut self, pipe: &Pipe) -> io::Result<Vec<Value>> {
        self.stream.write_all(&pipe.buf)?;
        self.stream.flush()?;
        let mut out = Vec::with_capacity(pipe.n);
        let mut chunk = vec![0u8; 64 * 1024];
        while out.len() < pipe.n {
            match resp::decode(&mut self.rbuf) {
                Ok(Some(v)) => {
                    out.push(v);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e.0)),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A bulk or simple string reply as bytes.
pub fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bulk(b) | Value::Simple(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_knows_each_command_and_its_key() {
        let mut p = Pipe::default();
        let long_key = "k".repeat(120);
        let many: Vec<&[u8]> = std::iter::once(&b"HDEL"[..])
            .chain(std::iter::once(long_key.as_bytes()))
            .chain(std::iter::repeat_n(&b"f"[..], 10))
            .collect();
        p.cmd(&[b"PING"]);
        p.cmd(&[b"EXPIRE", b"connections:alice", b"120"]);
        p.cmd(&many);
        p.cmd(&[b"SCRIPT", b"", b"x"]);
        assert_eq!(p.command(0).1, None);
        assert_eq!(p.command(1).1, Some(&b"connections:alice"[..]));
        assert_eq!(p.command(2).1, Some(long_key.as_bytes()));
        assert_eq!(p.command(3).1, Some(&b""[..]));
        let mut whole = BytesMut::new();
        for i in 0..p.len() {
            whole.extend_from_slice(p.command(i).0);
        }
        assert_eq!(whole, p.buf);
        let mut q = Pipe::default();
        q.cmd(&[b"PING"]);
        q.copy(&p, 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q.command(1), p.command(2));
    }
}
