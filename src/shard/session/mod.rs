//! One connection's protocol state as a value: the phase machine (request head → HTTP
//! body or WebSocket open → closing), the bytes of an incomplete request or frame, the
//! WebSocket decoder, the connection's clocks, and the translation of each client
//! message into an `Effect`. A session takes bytes, `&Limits` and the coarse clock and
//! returns effects one at a time; it never touches a socket, the broker, presence or
//! metrics. The shard applies the effects (and alone opens and closes connections),
//! telling the session what it decided (`open`, `responded`, `close`).

use bytes::Bytes;

use crate::config::Limits;
use crate::ws::handshake::{self, Parsed, RequestHead};
use crate::ws::inbound::{Flow, Inbound};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for an HTTP request head (a new connection, or a kept-alive one).
    Handshake,
    /// A plain HTTP request waiting for its body (`aside` holds the head).
    HttpBody,
    /// A plain HTTP request being answered (by the shard now, or by another thread
    /// later: a presence query); input is buffered (bounded) meanwhile, and the tick
    /// answers 504 at the deadline.
    HttpWait,
    /// WebSocket open.
    Open,
    /// A close frame or final response is queued; drop the socket once it is flushed.
    Closing,
}

/// A client command, owned (channel names and payloads are moved on to the broker).
#[derive(Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Subscribe; with an offset, resume after it (history channels).
    Subscribe(Box<str>, Option<crate::offset::Offset>),
    Unsubscribe(Box<str>),
    Publish {
        channel: Box<str>,
        /// The raw JSON of `data`, byte for byte.
        payload: Bytes,
        /// The raw JSON of `id`, when given.
        id: Option<Box<str>>,
    },
    Presence(Box<str>),
    /// A token to authenticate with (or to refresh the grant with).
    Auth(Box<str>),
    /// A history query (`{"type":"history",...}`).
    History {
        channel: Box<str>,
        limit: Option<u32>,
        since: Option<crate::offset::Offset>,
        id: Option<Box<str>>,
    },
}

/// What the shard must do next for this connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Queue these bytes on the WebSocket (a pong, an echo).
    Send(Bytes),
    /// Queue this error reply; `text` says a text message was received (counted).
    Error { frame: Bytes, text: bool },
    /// A client command to carry out (a text message was received).
    Command(Cmd),
    /// Queue a close frame with this code (the session is already `Closing`).
    Close { code: u16, reason: &'static str },
    /// A WebSocket upgrade to admit: then `Session::open`, or a refusal answered with
    /// `Wire::respond_http`. Bytes sent behind it wait in the session.
    Upgrade(Box<RequestHead>),
    /// A plain HTTP request with its whole body, to answer (the session waits in
    /// `HttpWait` until `Session::responded`).
    Request(Box<RequestHead>, Vec<u8>),
    /// An HTTP answer the session decided itself (a malformed or too large request):
    /// write it with `Wire::respond_http`, which closes (the stream can no longer be
    /// parsed; the session waits in `HttpWait` meanwhile).
    Reject(Vec<u8>),
    /// The client sent more than a request may hold while its answer was pending: drop
    /// the connection without an answer.
    Drop,
}

/// The tick's decision for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Send a ping (the connection has been silent for about an interval).
    Ping,
    /// Drop it: a handshake or request not completed in time, a client silent for two
    /// ping intervals, or a peer that never read its close frame.
    Expire,
    /// A request waiting for another thread's answer gets 504 instead.
    Answer504,
    /// Close the WebSocket with this code: 4001 not authenticated in time, 4003 the
    /// token expired without a refresh.
    Close {
        code: u16,
        reason: &'static str,
    },
}

/// The tick's timeouts, in whole seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub handshake: u32,
    pub ping: u32,
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// Unconsumed input: a request head (or bytes pipelined behind a request being
    /// answered), or the start of an incomplete frame.
    inbuf: Vec<u8>,
    inbound: Inbound,
    /// What only some connections need, in one pointer: the HTTP request head waiting
    /// for its body (phase `HttpBody`), or the authentication state (auth on, `Open`).
    aside: Option<Box<Aside>>,
    /// The WebSocket was opened on the echo path (conformance testing).
    echo: bool,
    /// permessage-deflate was negotiated with this `server_max_window_bits` (8–15);
    /// 0: not negotiated. One byte, in what was padding: no per-connection window.
    deflate: u8,
    /// The HTTP request being answered allows the connection to stay open after it.
    keep_alive: bool,
    /// The peer closed its side (FIN): what is owed is still written, then the socket
    /// is dropped.
    read_closed: bool,
    /// Coarse second the connection (or its current HTTP request) started.
    opened: u32,
    /// Coarse second of the last bytes received.
    last_seen: u32,
    /// A ping was sent and nothing has arrived since.
    ping_outstanding: bool,
}

/// See `Session::aside` (the two never live at the same time: a request head is
/// dropped once answered, before any upgrade).
#[derive(Debug)]
enum Aside {
    Http(Box<RequestHead>),
    Auth(SessionAuth),
}

impl Session {
    pub fn new(now: u32) -> Session {
        Session {
            phase: Phase::Handshake,
            inbuf: Vec::new(),
            inbound: Inbound::default(),
            aside: None,
            echo: false,
            deflate: 0,
            keep_alive: false,
            read_closed: false,
            opened: now,
            last_seen: now,
            ping_outstanding: false,
        }
    }

    fn pending_http(&self) -> Option<&RequestHead> {
        match self.aside.as_deref() {
            Some(Aside::Http(h)) => Some(h),
            _ => None,
        }
    }

    fn take_pending_http(&mut self) -> Option<Box<RequestHead>> {
        match self.aside.take().map(|a| *a) {
            Some(Aside::Http(h)) => Some(h),
            other => {
                self.aside = other.map(Box::new);
                None
            }
        }
    }

    /// Drops a pending request head (the authentication state stays).
    fn clear_pending_http(&mut self) {
        if matches!(self.aside.as_deref(), Some(Aside::Http(_))) {
            self.aside = None;
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn is_echo(&self) -> bool {
        self.echo
    }

    /// The `server_max_window_bits` of the negotiated permessage-deflate, 0 if none.
    pub fn deflate(&self) -> u8 {
        self.deflate
    }

    /// permessage-deflate was negotiated on the upgrade (`bits`: the server window).
    pub fn set_deflate(&mut self, bits: u8) {
        self.deflate = bits;
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    pub fn read_closed(&self) -> bool {
        self.read_closed
    }

    /// Input is waiting (a pipelined request, or frames behind an upgrade).
    pub fn has_input(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Bytes arrived at `now` (resets the silence clock).
    pub fn heard(&mut self, now: u32) {
        self.last_seen = now;
        self.ping_outstanding = false;
    }

    /// A ping was queued.
    pub fn pinged(&mut self) {
        self.ping_outstanding = true;
    }

    /// Takes bytes read from the socket and hands out the first effect they cause; call
    /// again with the same `fresh` and `at` until `None`.
    /// `fresh[*at..]` is what is left to consume; bytes of an incomplete frame or
    /// request are kept. `may_parse`: no earlier HTTP answer is still being written (a
    /// kept-alive connection's next request waits for it).
    pub fn poll(
        &mut self,
        fresh: &mut [u8],
        at: &mut usize,
        limits: &Limits,
        may_parse: bool,
    ) -> Option<Effect> {
        match self.phase {
            Phase::Closing => {
                *at = fresh.len();
                None
            }
            Phase::Open => self.poll_frames(fresh, at, limits),
            Phase::Handshake | Phase::HttpBody | Phase::HttpWait => {
                let cap = limits.max_request_head + limits.max_request_body;
                let new = &fresh[*at..];
                *at = fresh.len();
                if self.inbuf.len() + new.len() > cap {
                    self.close();
                    return Some(Effect::Drop);
                }
                self.inbuf.extend_from_slice(new);
                if self.phase == Phase::HttpWait || !may_parse {
                    return None;
                }
                // Frames sent right behind an upgrade stay buffered until it is admitted.
                self.parse_request(limits)
            }
        }
    }

    /// Decodes WebSocket frames: straight from `fresh` when nothing is buffered (no
    /// copy), else from the buffer the new bytes are appended to.
    fn poll_frames(&mut self, fresh: &mut [u8], at: &mut usize, limits: &Limits) -> Option<Effect> {
        let max = if self.echo {
            crate::ws::ECHO_MAX_MESSAGE
        } else {
            limits.max_message
        };
        if self.inbuf.is_empty() {
            let rest = &mut fresh[*at..];
            let (used, effect) = self.decode(rest, max, limits);
            *at += used;
            if effect.is_none() && self.phase == Phase::Open && *at < fresh.len() {
                self.inbuf.extend_from_slice(&fresh[*at..]);
                *at = fresh.len();
            }
            return effect;
        }
        self.inbuf.extend_from_slice(&fresh[*at..]);
        *at = fresh.len();
        let mut pending = std::mem::take(&mut self.inbuf);
        let (used, effect) = self.decode(&mut pending, max, limits);
        pending.drain(..used);
        if !pending.is_empty() && self.phase == Phase::Open {
            let keep = (4 * pending.len()).max(crate::config::TUNING.inbuf_keep);
            if pending.capacity() > keep {
                pending.shrink_to(keep);
            }
            self.inbuf = pending;
        }
        effect
    }

    /// Runs the decoder over `buf` until it yields an effect; returns the bytes used.
    fn decode(&mut self, buf: &mut [u8], max: usize, limits: &Limits) -> (usize, Option<Effect>) {
        let mut inbound = std::mem::take(&mut self.inbound);
        let (echo, deflate) = (self.echo, self.deflate != 0);
        let mut ready = None;
        // The decoder stops after the first message that asks for something, so there
        // is never more than one effect at a time (and no queue to allocate).
        let result = inbound.feed_ext(buf, max, deflate, &mut |msg| match message_effect(
            msg, echo, limits,
        ) {
            Some(effect) => {
                ready = Some(effect);
                Flow::Stop
            }
            None => Flow::Continue,
        });
        self.inbound = inbound;
        let used = match result {
            Ok(used) => used,
            Err(fail) => {
                // A protocol violation (never after a message: the decoder stopped
                // there): close with its code.
                ready = Some(Effect::Close {
                    code: fail.code,
                    reason: fail.reason,
                });
                buf.len()
            }
        };
        if matches!(ready, Some(Effect::Close { .. })) {
            self.enter_closing();
        }
        (used, ready)
    }

    /// Parses the request head (and body) buffered so far.
    fn parse_request(&mut self, limits: &Limits) -> Option<Effect> {
        if self.phase == Phase::HttpBody {
            let need = self
                .pending_http()
                .and_then(|h| h.content_length)
                .unwrap_or(0);
            if self.inbuf.len() < need {
                return None;
            }
            let head = self.take_pending_http()?;
            let body: Vec<u8> = self.inbuf.drain(..need).collect();
            return Some(self.request(head, body));
        }
        if self.inbuf.is_empty() {
            return None;
        }
        let head = match handshake::parse(&self.inbuf, limits.max_request_head) {
            Parsed::Incomplete => return None,
            Parsed::Reject(status, why) => {
                self.await_answer(false);
                return Some(Effect::Reject(crate::http::response::text_response(
                    status, why,
                )));
            }
            Parsed::Request(head) => head,
        };
        self.inbuf.drain(..head.head_len);
        if head.ws_accept.is_some() {
            // Nothing more is parsed until the shard admits or refuses it.
            self.keep_alive = false;
            self.phase = Phase::HttpWait;
            return Some(Effect::Upgrade(head));
        }
        let need = head.content_length.unwrap_or(0);
        if need > limits.max_request_body {
            self.await_answer(false);
            return Some(Effect::Reject(crate::http::response::text_response(
                413,
                "request body too large",
            )));
        }
        if self.inbuf.len() >= need {
            let body: Vec<u8> = self.inbuf.drain(..need).collect();
            Some(self.request(head, body))
        } else {
            self.phase = Phase::HttpBody;
            self.aside = Some(Box::new(Aside::Http(head)));
            None
        }
    }

    fn request(&mut self, head: Box<RequestHead>, body: Vec<u8>) -> Effect {
        self.await_answer(head.keep_alive);
        Effect::Request(head, body)
    }

    /// Nothing more is parsed until the shard answers (`responded`); `keep_alive`: the
    /// request allows the connection to stay open after that answer.
    fn await_answer(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
        self.phase = Phase::HttpWait;
    }

    /// The shard admitted the upgrade: the WebSocket is open.
    pub fn open(&mut self, echo: bool) {
        self.phase = Phase::Open;
        self.echo = echo;
        if self.inbuf.is_empty() {
            // An idle open connection owns no buffer.
            self.inbuf = Vec::new();
        }
    }

    /// The shard queued the answer to the current HTTP request (or the refusal of an
    /// upgrade). Returns whether the connection stays open for another request
    /// (`keep_alive` allowed by the shard, asked by the request, the peer still sending).
    pub fn responded(&mut self, keep_alive: bool, now: u32) -> bool {
        let keep = keep_alive && self.keep_alive && !self.read_closed;
        if keep {
            self.phase = Phase::Handshake;
            self.opened = now;
        } else {
            self.close();
        }
        self.clear_pending_http();
        keep
    }

    /// Moves to `Closing` (nothing is read or queued after the close frame or final
    /// response). False if it was already closing.
    pub fn close(&mut self) -> bool {
        if self.phase == Phase::Closing {
            return false;
        }
        self.enter_closing();
        true
    }

    fn enter_closing(&mut self) {
        self.phase = Phase::Closing;
        self.inbuf = Vec::new();
        self.clear_pending_http();
    }

    /// The peer closed its side (a read returned 0).
    pub fn peer_closed(&mut self) {
        self.read_closed = true;
        self.keep_alive = false;
    }

    /// The once-a-second decision for this connection (`gen` spreads pings).
    pub fn due(&self, gen: u32, now: u32, t: Timers) -> Due {
        let silent = now.saturating_sub(self.last_seen);
        let since_opened = now.saturating_sub(self.opened);
        if let (Phase::Open, Some(auth)) = (self.phase, self.auth()) {
            if now >= auth.deadline {
                return match auth.grant {
                    None => Due::Close {
                        code: 4001,
                        reason: "unauthorized",
                    },
                    Some(_) => Due::Close {
                        code: 4003,
                        reason: "token expired",
                    },
                };
            }
        }
        match self.phase {
            Phase::HttpWait if since_opened >= t.handshake => Due::Answer504,
            Phase::Handshake | Phase::HttpBody if since_opened >= t.handshake => Due::Expire,
            Phase::Open if silent >= t.ping.saturating_mul(2) => Due::Expire,
            Phase::Open
                if !self.ping_outstanding
                    && silent.saturating_add(jitter(gen, t.ping)) >= t.ping =>
            {
                Due::Ping
            }
            // A peer that never reads its close frame is not waited for forever.
            Phase::Closing if silent >= t.handshake.max(t.ping.saturating_mul(2)) => Due::Expire,
            _ => Due::Nothing,
        }
    }
}

/// How many seconds early connection `gen` is pinged: spreads the pings (and the pongs
/// that resynchronise `last_seen`) of connections opened in the same second over half
/// an interval, instead of one burst every interval.
fn jitter(gen: u32, ping: u32) -> u32 {
    gen.wrapping_mul(2_654_435_761) % (ping / 2).max(1)
}

mod auth;
mod message;
#[cfg(test)]
mod tests;

pub use auth::{may_publish, may_subscribe, Refresh, SessionAuth};
use message::message_effect;
