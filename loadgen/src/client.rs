//! Non-blocking WebSocket client connection for mio event loops: connect, HTTP upgrade
//! handshake, masked writes with a pending-output buffer, and frame reading out of a
//! large per-thread read buffer (only a partial trailing frame is kept per connection).
//! Pings are answered with pongs internally.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::clock::now_ns;
use crate::wsframe::{self, Decode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Handshake,
    Open,
    /// We sent a close frame and wait for the server's close / EOF.
    Closing,
    Closed,
}

/// What `WsConn::read` reports to its caller.
pub enum Event<'a> {
    /// Handshake completed.
    Open,
    /// One complete text message.
    Text(&'a [u8]),
    /// One complete binary message (ignored by loadgen, counted).
    Binary,
    /// The server sent a close frame (with its code if any).
    Close(Option<u16>),
}

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Handshake,
    Protocol,
    Io,
}

pub struct WsConn {
    pub sock: TcpStream,
    pub state: State,
    carry: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    frag: Vec<u8>,
    in_frag: bool,
    rng: u32,
    accept: String,
    request: Vec<u8>,
}

/// Bytes of pending output above which callers should stop queueing.
pub const WBUF_HIGH: usize = 1 << 20;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl WsConn {
    /// Wrap a socket whose non-blocking connect is in progress.
    pub fn new(sock: TcpStream, host: &str, path: &str, seed: u32) -> WsConn {
        let key = tungstenite::handshake::client::generate_key();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: fanout-loadgen\r\n\r\n"
        )
        .into_bytes();
        WsConn {
            sock,
            state: State::Connecting,
            carry: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            frag: Vec::new(),
            in_frag: false,
            rng: seed | 1,
            accept,
            request,
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift32: masks need to be unpredictable to intermediaries only in browsers;
        // a cheap PRNG is what every non-browser client uses.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x.to_ne_bytes()
    }

    /// Bytes queued but not yet written.
    pub fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Queue one text message (flush separately).
    pub fn queue_text(&mut self, payload: &[u8]) {
        let m = self.mask();
        wsframe::encode_client(&mut self.wbuf, wsframe::OP_TEXT, payload, m);
    }

    /// Queue a close frame with `code` and move to `Closing`.
    pub fn queue_close(&mut self, code: u16) {
        if matches!(self.state, State::Open) {
            let m = self.mask();
            wsframe::encode_client(&mut self.wbuf, wsframe::OP_CLOSE, &code.to_be_bytes(), m);
            self.state = State::Closing;
        }
    }

    /// Handle a writable event: completes the TCP connect (sending the upgrade request)
    /// and flushes pending output.
    pub fn on_writable(&mut self) -> Result<(), Failure> {
        if self.state == State::Connecting {
            if let Ok(Some(_)) | Err(_) = self.sock.take_error() {
                return Err(Failure::Connect);
            }
            match self.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(_) => return Err(Failure::Connect),
            }
            self.state = State::Handshake;
            let req = std::mem::take(&mut self.request);
            self.wbuf.extend_from_slice(&req);
        }
        self.flush().map_err(|_| Failure::Io)
    }

    /// Write as much pending output as the socket takes.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.state == State::Connecting {
            return Ok(());
        }
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > (1 << 16) && self.wpos * 2 > self.wbuf.len() {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Handle a readable event: read until the socket would block, reporting each
    /// complete message through `f` together with the time of the read that completed
    /// it. `rbuf` is a large scratch buffer shared by all connections of a thread.
    /// Returns Ok(false) once the peer closed the TCP connection.
    pub fn read(
        &mut self,
        rbuf: &mut Vec<u8>,
        f: &mut dyn FnMut(Event, u64),
    ) -> Result<bool, Failure> {
        if self.state == State::Connecting {
            return Ok(true);
        }
        let mut have = self.carry.len();
        if rbuf.len() < have * 2 {
            rbuf.resize(have * 2, 0);
        }
        rbuf[..have].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut open = true;
        loop {
            if have == rbuf.len() {
                let n = rbuf.len() * 2;
                rbuf.resize(n, 0);
            }
            match self.sock.read(&mut rbuf[have..]) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => {
                    let now = now_ns();
                    have += n;
                    let used = self.process(&mut rbuf[..have], now, f)?;
                    rbuf.copy_within(used..have, 0);
                    have -= used;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    open = false;
                    break;
                }
            }
        }
        self.carry.extend_from_slice(&rbuf[..have]);
        if self.carry.capacity() > 4 * (self.carry.len() + 4096) {
            self.carry.shrink_to(self.carry.len() + 1024);
        }
        if !self.wbuf.is_empty() {
            self.flush().map_err(|_| Failure::Io)?;
        }
        if !open {
            self.state = State::Closed;
        }
        Ok(open)
    }

    fn check_handshake(&self, head: &[u8]) -> Result<(), Failure> {
        let text = std::str::from_utf8(head).map_err(|_| Failure::Handshake)?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if status.split(' ').nth(1) != Some("101") {
            return Err(Failure::Handshake);
        }
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                    return if v.trim() == self.accept {
                        Ok(())
                    } else {
                        Err(Failure::Handshake)
                    };
                }
            }
        }
        Err(Failure::Handshake)
    }

    fn process(
        &mut self,
        buf: &mut [u8],
        now: u64,
        f: &mut dyn FnMut(Event, u64),
    ) -> Result<usize, Failure> {
        let mut pos = 0;
        if self.state == State::Handshake {
            match find(buf, b"\r\n\r\n") {
                None if buf.len() > 16384 => return Err(Failure::Handshake),
                None => return Ok(0),
                Some(i) => {
                    self.check_handshake(&buf[..i])?;
                    self.state = State::Open;
                    f(Event::Open, now);
                    pos = i + 4;
                }
            }
        }
        while pos < buf.len() {
            let fr = match wsframe::decode(&buf[pos..]) {
                Decode::Incomplete => break,
                Decode::Error(_) => return Err(Failure::Protocol),
                Decode::Frame(fr) => fr,
            };
            let start = pos + fr.header_len;
            let end = start + fr.payload_len;
            pos = end;
            if let Some(m) = fr.mask {
                wsframe::apply_mask(&mut buf[start..end], m);
            }
            let payload = &buf[start..end];
            match fr.opcode {
                wsframe::OP_TEXT | wsframe::OP_BINARY => {
                    if self.in_frag {
                        return Err(Failure::Protocol);
                    }
                    if fr.fin {
                        if fr.opcode == wsframe::OP_TEXT {
                            f(Event::Text(payload), now);
                        } else {
                            f(Event::Binary, now);
                        }
                    } else {
                        self.in_frag = true;
                        self.frag.clear();
                        // Remember the opcode in the first byte.
                        self.frag.push(fr.opcode);
                        self.frag.extend_from_slice(payload);
                    }
                }
                wsframe::OP_CONT => {
                    if !self.in_frag {
                        return Err(Failure::Protocol);
                    }
                    self.frag.extend_from_slice(payload);
                    if fr.fin {
                        self.in_frag = false;
                        let v = std::mem::take(&mut self.frag);
                        if v.first() == Some(&wsframe::OP_TEXT) {
                            f(Event::Text(&v[1..]), now);
                        } else {
                            f(Event::Binary, now);
                        }
                        self.frag = v;
                        self.frag.clear();
                    }
                }
                wsframe::OP_PING => {
                    let m = self.mask();
                    wsframe::encode_client(&mut self.wbuf, wsframe::OP_PONG, payload, m);
                }
                wsframe::OP_PONG => {}
                _ => {
                    // OP_CLOSE
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    if self.state == State::Open {
                        let m = self.mask();
                        let echo = code.map(|c| c.to_be_bytes()).unwrap_or([0x03, 0xE8]);
                        wsframe::encode_client(&mut self.wbuf, wsframe::OP_CLOSE, &echo, m);
                    }
                    self.state = State::Closing;
                    f(Event::Close(code), now);
                }
            }
        }
        Ok(pos)
    }
}
