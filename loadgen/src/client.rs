//! Non-blocking WebSocket client connection for mio event loops: connect, HTTP upgrade
//! handshake, masked writes with a pending-output buffer, and frame reading out of a
//! large per-thread read buffer (only a partial trailing frame is kept per connection).
//! Pings are answered with pongs internally. With `offer_deflate`, the upgrade offers
//! permessage-deflate (RFC 7692, no context takeover) and compressed messages are
//! inflated (one inflater per thread) before they are reported.

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
    /// One complete text message (inflated if it came compressed) and the bytes its
    /// frames took on the wire (headers included).
    Text(&'a [u8], usize),
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
    /// The server agreed to permessage-deflate.
    deflate: bool,
    /// The fragmented message in `frag` is compressed (RSV1 on its first frame).
    frag_z: bool,
    /// Wire bytes of the frames of the message in `frag` so far.
    frag_wire: usize,
}

thread_local! {
    /// Raw-deflate inflater and its output, reset per message (the server answers
    /// `server_no_context_takeover`, which `offer_deflate` asks for).
    static INFLATER: std::cell::RefCell<(flate2::Decompress, Vec<u8>)> =
        std::cell::RefCell::new((flate2::Decompress::new(false), Vec::new()));
}

/// Inflates one compressed message (RFC 7692: the `00 00 ff ff` tail is appended) and
/// hands it to `then`; `None` if it is not valid deflate.
fn inflate<R>(data: &[u8], then: impl FnOnce(&[u8]) -> R) -> Option<R> {
    INFLATER.with(|cell| {
        let (d, out) = &mut *cell.borrow_mut();
        d.reset(false);
        out.clear();
        for part in [data, &[0, 0, 0xff, 0xff][..]] {
            let start = d.total_in();
            loop {
                if out.capacity() - out.len() < 4096 {
                    out.reserve(out.capacity().max(16384));
                }
                let used = (d.total_in() - start) as usize;
                d.decompress_vec(&part[used..], out, flate2::FlushDecompress::Sync)
                    .ok()?;
                if (d.total_in() - start) as usize == part.len() && out.len() < out.capacity() {
                    break;
                }
                if out.len() > wsframe::MAX_FRAME as usize {
                    return None;
                }
            }
        }
        Some(then(out))
    })
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
            deflate: false,
            frag_z: false,
            frag_wire: 0,
        }
    }

    /// Offers permessage-deflate on the upgrade (call before the connect completes).
    pub fn offer_deflate(&mut self) {
        let offer = b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n";
        if self.request.ends_with(b"\r\n\r\n") {
            self.request.truncate(self.request.len() - 2);
            self.request.extend_from_slice(offer);
        }
    }

    /// The server agreed to permessage-deflate.
    pub fn deflate(&self) -> bool {
        self.deflate
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
            match crate::net::connected(&self.sock) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
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

    fn check_handshake(&mut self, head: &[u8]) -> Result<(), Failure> {
        let text = std::str::from_utf8(head).map_err(|_| Failure::Handshake)?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or("");
        if status.split(' ').nth(1) != Some("101") {
            return Err(Failure::Handshake);
        }
        let mut accepted = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                    if v.trim() != self.accept {
                        return Err(Failure::Handshake);
                    }
                    accepted = true;
                } else if k.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
                    self.deflate |= v.trim().starts_with("permessage-deflate");
                }
            }
        }
        if accepted {
            Ok(())
        } else {
            Err(Failure::Handshake)
        }
    }

    /// Reports one whole text or binary message (inflating it when `compressed`).
    fn message(
        text: bool,
        compressed: bool,
        data: &[u8],
        wire: usize,
        now: u64,
        f: &mut dyn FnMut(Event, u64),
    ) -> Result<(), Failure> {
        if !text {
            f(Event::Binary, now);
        } else if compressed {
            inflate(data, |m| f(Event::Text(m, wire), now)).ok_or(Failure::Protocol)?;
        } else {
            f(Event::Text(data, wire), now);
        }
        Ok(())
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
            let wire = end - pos;
            pos = end;
            // RSV1 only on the first frame of a data message, only when negotiated.
            if fr.rsv1
                && (!self.deflate || !matches!(fr.opcode, wsframe::OP_TEXT | wsframe::OP_BINARY))
            {
                return Err(Failure::Protocol);
            }
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
                        let text = fr.opcode == wsframe::OP_TEXT;
                        Self::message(text, fr.rsv1, payload, wire, now, f)?;
                    } else {
                        self.in_frag = true;
                        self.frag_z = fr.rsv1;
                        self.frag_wire = wire;
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
                    self.frag_wire += wire;
                    if fr.fin {
                        self.in_frag = false;
                        let v = std::mem::take(&mut self.frag);
                        let text = v.first() == Some(&wsframe::OP_TEXT);
                        Self::message(text, self.frag_z, &v[1..], self.frag_wire, now, f)?;
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
