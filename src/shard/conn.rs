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

pub use crate::ids::ConnId;

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

/// What the once-a-second tick owes a connection.
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
}

/// The tick's timeouts, in whole seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub handshake: u32,
    pub ping: u32,
}

/// The tick's decision for one connection: a pure function of its phase and clocks.
pub fn due(
    phase: Phase,
    opened: u32,
    last_seen: u32,
    ping_outstanding: bool,
    gen: u32,
    now: u32,
    t: Timers,
) -> Due {
    let silent = now.saturating_sub(last_seen);
    match phase {
        Phase::HttpWait if now.saturating_sub(opened) >= t.handshake => Due::Answer504,
        Phase::Handshake | Phase::HttpBody if now.saturating_sub(opened) >= t.handshake => {
            Due::Expire
        }
        Phase::Open if silent >= t.ping.saturating_mul(2) => Due::Expire,
        Phase::Open
            if !ping_outstanding && silent.saturating_add(jitter(gen, t.ping)) >= t.ping =>
        {
            Due::Ping
        }
        // A peer that never reads its close frame is not waited for forever.
        Phase::Closing if silent >= t.handshake.max(t.ping.saturating_mul(2)) => Due::Expire,
        _ => Due::Nothing,
    }
}

/// How many seconds early connection `gen` is pinged: spreads the pings (and the pongs
/// that resynchronise `last_seen`) of connections opened in the same second over half
/// an interval, instead of one burst every interval.
fn jitter(gen: u32, ping: u32) -> u32 {
    gen.wrapping_mul(2_654_435_761) % (ping / 2).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timers = Timers {
        handshake: 10,
        ping: 25,
    };

    #[test]
    fn handshakes_and_requests_expire_waiting_requests_get_504() {
        assert_eq!(due(Phase::Handshake, 0, 0, false, 1, 9, T), Due::Nothing);
        assert_eq!(due(Phase::Handshake, 0, 0, false, 1, 10, T), Due::Expire);
        assert_eq!(due(Phase::HttpBody, 5, 0, false, 1, 15, T), Due::Expire);
        assert_eq!(due(Phase::HttpWait, 5, 0, false, 1, 14, T), Due::Nothing);
        assert_eq!(due(Phase::HttpWait, 5, 0, false, 1, 15, T), Due::Answer504);
    }

    #[test]
    fn open_connections_are_pinged_then_dropped_closing_ones_not_kept_forever() {
        // gen 0 has no jitter: pinged after one interval of silence.
        assert_eq!(due(Phase::Open, 0, 0, false, 0, 24, T), Due::Nothing);
        assert_eq!(due(Phase::Open, 0, 0, false, 0, 25, T), Due::Ping);
        assert_eq!(due(Phase::Open, 0, 0, true, 0, 30, T), Due::Nothing);
        assert_eq!(due(Phase::Open, 0, 0, true, 0, 50, T), Due::Expire);
        // Jitter pings some connections up to half an interval early, never later.
        let early = (0..100)
            .filter(|&g| due(Phase::Open, 0, 0, false, g, 20, T) == Due::Ping)
            .count();
        assert!(early > 0 && early < 100, "{early}");
        assert_eq!(due(Phase::Closing, 0, 0, false, 1, 49, T), Due::Nothing);
        assert_eq!(due(Phase::Closing, 0, 0, false, 1, 50, T), Due::Expire);
        // Huge configured values never overflow.
        let big = Timers {
            handshake: u32::MAX,
            ping: u32::MAX,
        };
        assert_eq!(due(Phase::Open, 0, 0, false, 7, 1000, big), Due::Nothing);
        assert_eq!(due(Phase::Closing, 0, 0, false, 7, 1000, big), Due::Nothing);
    }
}
