//! One client connection as its shard owns it: socket, phase, the bytes of an incomplete
//! frame, the WebSocket decoder state, the outbound queue and its subscriptions. Kept
//! small: an idle subscribed connection owns no buffer at all.

use mio::net::TcpStream;

use super::outq::OutQueue;
use crate::ws::inbound::Inbound;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the HTTP request head.
    Handshake,
    /// A plain HTTP request waiting for its body (`Conn::pending_http` holds the head).
    HttpBody,
    /// A plain HTTP request waiting for another thread's answer (a presence query);
    /// input is buffered (bounded) meanwhile, and `tick` answers 504 at the deadline.
    HttpWait,
    /// WebSocket open.
    Open,
    /// A close frame or final response is queued; drop the socket once it is flushed.
    Closing,
}

/// A connection's identity across threads: slab key plus a generation, so an answer
/// meant for a closed connection never reaches the one that reused its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub key: u32,
    pub gen: u32,
}

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub gen: u32,
    pub phase: Phase,
    /// Unconsumed input: a request head, or the start of an incomplete frame.
    pub inbuf: Vec<u8>,
    pub inbound: Inbound,
    pub outq: OutQueue,
    /// (local channel id, position in that channel's member list); the first two are
    /// stored inline, so a typical connection allocates nothing for them.
    pub subs: smallvec::SmallVec<[(u32, u32); 2]>,
    /// Queued in the shard's dirty list for the end-of-turn flush.
    pub dirty: bool,
    /// The socket said WouldBlock: wait for a writable event before writing again.
    pub blocked: bool,
    /// Output was left over after the last write (cleared once a write empties the
    /// queue); the shard pauses intake while most connections lag.
    pub lagging: bool,
    /// Bytes queued since the last flush (what the shard's intake budget looks at).
    pub queued_since_flush: u32,
    /// Coarse second (shard clock) of the last frame received.
    pub last_seen: u32,
    /// Coarse second the connection was accepted.
    pub opened: u32,
    /// A ping was sent and no frame has arrived since.
    pub ping_outstanding: bool,
    /// The drop-oldest policy already told this client about dropped frames.
    pub told_slow: bool,
    /// HTTP request head waiting for its body (phase `HttpBody`).
    pub pending_http: Option<Box<crate::ws::handshake::RequestHead>>,
    /// The WebSocket was opened on the echo path (conformance testing).
    pub echo: bool,
    /// Recorded in presence under this user id ("": the user is the connection id).
    pub presence: Option<Box<str>>,
    /// The peer closed its side (FIN): what is owed is still written, then the socket
    /// is dropped.
    pub read_closed: bool,
    /// The HTTP request being answered allows the connection to stay open after it.
    pub keep_alive: bool,
}

impl Conn {
    pub fn new(stream: TcpStream, gen: u32, now: u32) -> Conn {
        Conn {
            stream,
            gen,
            phase: Phase::Handshake,
            inbuf: Vec::new(),
            inbound: Inbound::default(),
            outq: OutQueue::default(),
            subs: smallvec::SmallVec::new(),
            dirty: false,
            blocked: false,
            lagging: false,
            queued_since_flush: 0,
            last_seen: now,
            opened: now,
            ping_outstanding: false,
            told_slow: false,
            pending_http: None,
            echo: false,
            presence: None,
            read_closed: false,
            keep_alive: false,
        }
    }

    /// Position of this connection in local channel `chan`'s member list.
    pub fn sub_index(&self, chan: u32) -> Option<usize> {
        self.subs.iter().position(|&(c, _)| c == chan)
    }
}
