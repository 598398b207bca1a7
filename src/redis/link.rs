//! One non-blocking connection to Redis, as a small state machine (down → connecting →
//! [TLS handshake →] up) with capped exponential backoff between attempts, AUTH/SELECT
//! on connect, a read buffer that RESP values are decoded from and a write buffer
//! flushed until the socket would block. Plain TCP or TLS (`rediss://`, through
//! `tls::TlsStream`); a failed handshake or a refused login is remembered for
//! `/healthz`. Used by both the reader and the writer; never blocks its thread (a host
//! name is resolved off it, `resolve.rs`), which may be a shard's.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::resolve::{Lookup, Resolver};
use super::resp::{self, RespError, Value};
use super::tls::{is_tls_error, TlsStream};
use super::url::RedisUrl;
use crate::config::backoff;

/// Give up on a connect attempt after this long.
/// See `config::Tuning`.
const CONNECT_TIMEOUT: Duration = crate::config::TUNING.connect_timeout;

#[derive(Debug)]
enum State {
    Down {
        retry_at: Instant,
    },
    Connecting {
        since: Instant,
    },
    /// TCP is up, the TLS handshake is running (bounded by the connect timeout).
    Handshaking {
        since: Instant,
    },
    Up,
}

/// The socket: plain TCP, or TLS over it.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.tcp,
        }
    }
}

/// What happened on the link during one look at it.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Nothing,
    /// The connection (and AUTH/SELECT) is established: (re)send state now.
    Connected,
    /// The connection was lost or refused.
    Lost,
}

pub struct Link {
    url: RedisUrl,
    token: Token,
    name: &'static str,
    state: State,
    stream: Option<Transport>,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// What each read() lands in before it is appended to `rbuf`.
    scratch: Vec<u8>,
    /// Resolves a host name off the caller's thread (the link may run on a shard).
    resolver: Resolver,
    attempt: u32,
    /// Redis refused the last AUTH/SELECT (cleared by one that succeeds).
    auth_refused: bool,
    /// `auth_refused` changed since `auth_change` last looked.
    auth_changed: bool,
    /// The last TLS handshake failed (cleared by one that succeeds).
    tls_failed: bool,
    /// `tls_failed` changed since `tls_change` last looked.
    tls_changed: bool,
    /// Replies to AUTH/SELECT still to be skipped.
    handshake_replies: usize,
    /// True once a connection was ever established (later ones are reconnects).
    pub was_up: bool,
}

impl Link {
    pub fn new(url: RedisUrl, token: Token, name: &'static str) -> Link {
        Link {
            url,
            token,
            name,
            state: State::Down {
                retry_at: Instant::now(),
            },
            stream: None,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(64 * 1024),
            scratch: Vec::new(),
            resolver: Resolver::default(),
            attempt: 0,
            auth_refused: false,
            auth_changed: false,
            tls_failed: false,
            tls_changed: false,
            handshake_replies: 0,
            was_up: false,
        }
    }

    /// The token the socket is registered with.
    pub fn token(&self) -> Token {
        self.token
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// Waiting to retry after a failed or lost connection (or before the first try).
    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Down { .. })
    }

    /// How long the owner may sleep before the link needs attention.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        match self.state {
            // Resolving a name: look for the answer again soon.
            State::Down { .. } if self.resolver.is_pending() => Some(Duration::from_millis(5)),
            State::Down { retry_at } => Some(retry_at.saturating_duration_since(now)),
            State::Connecting { since } | State::Handshaking { since } => {
                Some((since + CONNECT_TIMEOUT).saturating_duration_since(now))
            }
            State::Up => None,
        }
    }

    /// Starts a connect attempt when one is due; gives up on a slow one.
    pub fn maintain(&mut self, registry: &Registry, now: Instant) -> LinkEvent {
        match self.state {
            State::Down { retry_at } if now >= retry_at => {
                let limit = CONNECT_TIMEOUT;
                let addr = match self
                    .resolver
                    .lookup(&self.url.host, self.url.port, now, limit)
                {
                    Lookup::Pending => return LinkEvent::Nothing,
                    Lookup::Ready(addr) => addr,
                };
                match addr.and_then(|addr| self.start_connect(registry, addr)) {
                    Ok(()) => self.state = State::Connecting { since: now },
                    Err(e) => {
                        tracing::warn!(
                            link = self.name,
                            "Redis connect to {}:{} failed: {e}",
                            self.url.host,
                            self.url.port
                        );
                        self.schedule_retry(now);
                    }
                }
                LinkEvent::Nothing
            }
            State::Connecting { since } | State::Handshaking { since }
                if now >= since + CONNECT_TIMEOUT =>
            {
                let what = match self.state {
                    State::Handshaking { .. } => "TLS handshake",
                    _ => "connect",
                };
                tracing::warn!(
                    link = self.name,
                    "Redis {what} to {}:{} timed out",
                    self.url.host,
                    self.url.port
                );
                self.drop_stream(registry);
                self.schedule_retry(now);
                LinkEvent::Nothing
            }
            _ => LinkEvent::Nothing,
        }
    }

    fn start_connect(&mut self, registry: &Registry, addr: SocketAddr) -> io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.stream = Some(Transport::Plain(stream));
        Ok(())
    }

    fn schedule_retry(&mut self, now: Instant) {
        let wait = backoff(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Down {
            retry_at: now + wait,
        };
    }

    fn drop_stream(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            if let Transport::Tls(t) = &mut s {
                t.close();
            }
            let _ = registry.deregister(s.tcp());
        }
        self.rbuf.clear();
        self.wbuf.clear();
        self.handshake_replies = 0;
    }

    /// Closes the connection (after an error or on purpose) and schedules a reconnect.
    pub fn disconnect(&mut self, registry: &Registry, now: Instant) {
        self.drop_stream(registry);
        self.schedule_retry(now);
    }

    /// Handles a readiness event on the link's token: completes a connect, reads what
    /// arrived and writes what is queued.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) -> LinkEvent {
        if let State::Connecting { since } = self.state {
            let Some(Transport::Plain(stream)) = self.stream.as_ref() else {
                return LinkEvent::Nothing;
            };
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    tracing::warn!(link = self.name, "Redis connect failed: {e}");
                    self.disconnect(registry, now);
                    return LinkEvent::Nothing;
                }
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return LinkEvent::Nothing,
                Err(e) => {
                    tracing::warn!(link = self.name, "Redis connect failed: {e}");
                    self.disconnect(registry, now);
                    return LinkEvent::Nothing;
                }
            }
            let _ = stream.set_nodelay(true);
            let Some(tls) = self.url.tls.clone() else {
                return self.established();
            };
            let session = match tls.session(&self.url.host) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(link = self.name, "Redis TLS session: {e}");
                    self.disconnect(registry, now);
                    return LinkEvent::Nothing;
                }
            };
            let Some(Transport::Plain(tcp)) = self.stream.take() else {
                return LinkEvent::Nothing;
            };
            self.stream = Some(Transport::Tls(Box::new(TlsStream::new(tcp, session))));
            self.state = State::Handshaking { since };
        }
        if let State::Handshaking { .. } = self.state {
            return self.handshake(registry, now);
        }
        if !self.is_up() {
            return LinkEvent::Nothing;
        }
        if let Err(e) = self.read().and_then(|()| self.flush()) {
            if is_tls_error(&e) {
                // E.g. a server that wants a client certificate says so after the
                // handshake (TLS 1.3): fanout sends none.
                tracing::error!(link = self.name, "Redis connection lost: {e}");
            } else {
                tracing::warn!(link = self.name, "Redis connection lost: {e}");
            }
            self.disconnect(registry, now);
            return LinkEvent::Lost;
        }
        LinkEvent::Nothing
    }

    /// TCP (and TLS) is up: AUTH/SELECT are queued and the owner is told to send its
    /// state.
    fn established(&mut self) -> LinkEvent {
        self.state = State::Up;
        self.queue_handshake();
        if self.handshake_replies == 0 {
            self.attempt = 0;
        }
        tracing::info!(
            link = self.name,
            tls = self.url.tls.is_some(),
            "connected to Redis {}:{}",
            self.url.host,
            self.url.port
        );
        let _ = self.flush();
        LinkEvent::Connected
    }

    /// Moves the TLS handshake on; `Connected` once it is done. A certificate, CA, host
    /// name or protocol error is logged, remembered for `/healthz` and retried with the
    /// backoff of a lost connection (which keeps growing while it fails).
    fn handshake(&mut self, registry: &Registry, now: Instant) -> LinkEvent {
        if self.scratch.is_empty() {
            self.scratch = vec![0; 64 * 1024];
        }
        let Some(Transport::Tls(tls)) = self.stream.as_mut() else {
            return LinkEvent::Nothing;
        };
        let step = tls
            .read_into(&mut self.rbuf, &mut self.scratch)
            .and_then(|()| tls.write_from(&mut self.wbuf));
        match step {
            Ok(()) if tls.is_handshaking() => LinkEvent::Nothing,
            Ok(()) => {
                self.tls_changed |= self.tls_failed;
                self.tls_failed = false;
                self.established()
            }
            Err(e) if is_tls_error(&e) => {
                tracing::error!(
                    link = self.name,
                    "Redis TLS handshake with {}:{} failed: {e} (check --redis-ca, the host name in the URL and the server certificate)",
                    self.url.host,
                    self.url.port
                );
                self.tls_changed = true;
                self.tls_failed = true;
                self.disconnect(registry, now);
                LinkEvent::Nothing
            }
            Err(e) => {
                tracing::warn!(
                    link = self.name,
                    "Redis TLS handshake with {}:{} broke off: {e}",
                    self.url.host,
                    self.url.port
                );
                self.disconnect(registry, now);
                LinkEvent::Nothing
            }
        }
    }

    fn queue_handshake(&mut self) {
        if let Some(pw) = self.url.password.clone() {
            match self.url.username.clone() {
                Some(user) => {
                    resp::encode(&mut self.wbuf, &[b"AUTH", user.as_bytes(), pw.as_bytes()])
                }
                None => resp::encode(&mut self.wbuf, &[b"AUTH", pw.as_bytes()]),
            }
            self.handshake_replies += 1;
        }
        if let Some(db) = self.url.db {
            resp::encode(&mut self.wbuf, &[b"SELECT", db.to_string().as_bytes()]);
            self.handshake_replies += 1;
        }
    }

    /// Reads everything available into `rbuf` (through a scratch buffer, so nothing is
    /// zero-filled per read). Errors on EOF.
    fn read(&mut self) -> io::Result<()> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; 64 * 1024];
        }
        let stream = match self.stream.as_mut() {
            None => return Ok(()),
            Some(Transport::Tls(tls)) => return tls.read_into(&mut self.rbuf, &mut self.scratch),
            Some(Transport::Plain(s)) => s,
        };
        loop {
            match stream.read(&mut self.scratch) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// True while the replies to AUTH/SELECT are still to come (`next_value` skips them).
    pub fn handshake_pending(&self) -> bool {
        self.handshake_replies > 0
    }

    /// Writes `wbuf` until empty or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        let stream = match self.stream.as_mut() {
            None => return Ok(()),
            Some(Transport::Tls(tls)) => return tls.write_from(&mut self.wbuf),
            Some(Transport::Plain(s)) => s,
        };
        while !self.wbuf.is_empty() {
            match stream.write(&self.wbuf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `Some(refused)` when Redis refused our credentials, or accepted them after a
    /// refusal, since the last call (for the health flag and the counter).
    pub fn auth_change(&mut self) -> Option<bool> {
        std::mem::take(&mut self.auth_changed).then_some(self.auth_refused)
    }

    /// `Some(failed)` when a TLS handshake failed, or succeeded after a failure, since
    /// the last call (for the health flag and the counter).
    pub fn tls_change(&mut self) -> Option<bool> {
        std::mem::take(&mut self.tls_changed).then_some(self.tls_failed)
    }

    /// The next complete value received, skipping the AUTH/SELECT replies.
    pub fn next_value(&mut self) -> Result<Option<Value>, RespError> {
        loop {
            let v = resp::decode(&mut self.rbuf)?;
            match v {
                Some(Value::Error(e)) if self.handshake_replies > 0 => {
                    tracing::error!(
                        link = self.name,
                        "Redis refused AUTH/SELECT: {}",
                        String::from_utf8_lossy(&e)
                    );
                    // Not a lost connection: retrying at once would only be refused
                    // again, so the backoff keeps growing (it is reset only after a
                    // connection whose AUTH/SELECT succeeded).
                    self.auth_changed = true;
                    self.auth_refused = true;
                    return Err(RespError("AUTH/SELECT refused"));
                }
                Some(_) if self.handshake_replies > 0 => {
                    self.handshake_replies -= 1;
                    if self.handshake_replies == 0 {
                        self.attempt = 0;
                        self.auth_changed |= self.auth_refused;
                        self.auth_refused = false;
                    }
                }
                other => return Ok(other),
            }
        }
    }
}
