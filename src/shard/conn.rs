//! One client connection as its shard owns it: the socket, its protocol `Session`, the
//! outbound queue, its subscriptions and the flush bookkeeping. Kept small: an idle
//! subscribed connection owns no buffer at all.

use super::subs::{ChanId, Pos};
use mio::net::TcpStream;
use slab::Slab;

use super::outq::OutQueue;
use super::session::Session;

pub use super::key::Key;
pub use super::session::Phase;
pub use crate::ids::ConnId;

/// A shard's connections, by `Key`.
#[derive(Debug, Default)]
pub struct Conns(Slab<Conn>);

impl Conns {
    pub fn get(&self, key: Key) -> Option<&Conn> {
        self.0.get(key.slot())
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut Conn> {
        self.0.get_mut(key.slot())
    }

    /// The key the next `insert` will use (`None`: the shard is full).
    pub fn next_key(&self) -> Option<Key> {
        Key::from_slot(self.0.vacant_key())
    }

    pub fn insert(&mut self, conn: Conn) -> Key {
        Key::from_raw(self.0.insert(conn) as u32)
    }

    pub fn remove(&mut self, key: Key) -> Option<Conn> {
        self.0.try_remove(key.slot())
    }

    pub fn keys(&self) -> Vec<Key> {
        self.iter().map(|(k, _)| k).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &Conn)> {
        self.0.iter().map(|(k, c)| (Key::from_raw(k as u32), c))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut Conn)> {
        self.0.iter_mut().map(|(k, c)| (Key::from_raw(k as u32), c))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub gen: u32,
    /// Phase, input buffers, decoder, clocks: everything the protocol decides with.
    pub session: Session,
    pub outq: OutQueue,
    /// (local channel id, position in that channel's member list); the first two are
    /// stored inline, so a typical connection allocates nothing for them.
    pub subs: smallvec::SmallVec<[(ChanId, Pos); 2]>,
    /// Queued in the shard's dirty list for the end-of-turn flush.
    pub dirty: bool,
    /// The socket said WouldBlock: wait for a writable event before writing again.
    pub blocked: bool,
    /// Output was left over after the last write (cleared once a write empties the
    /// queue); the shard pauses intake while most connections lag.
    pub lagging: bool,
    /// Bytes queued since the last flush (what the shard's intake budget looks at).
    pub queued_since_flush: u32,
    /// The drop-oldest policy already told this client about dropped frames.
    pub told_slow: bool,
    /// Recorded in presence under this user id ("": the user is the connection id).
    pub presence: Option<Box<str>>,
    /// Per-client limit state, only when `--max-conns-per-ip` or `--publish-rate` is on.
    pub limits: Option<Box<super::admission::ConnLimits>>,
}

impl Conn {
    pub fn new(stream: TcpStream, gen: u32, now: u32) -> Conn {
        Conn {
            stream,
            gen,
            session: Session::new(now),
            outq: OutQueue::default(),
            subs: smallvec::SmallVec::new(),
            dirty: false,
            blocked: false,
            lagging: false,
            queued_since_flush: 0,
            told_slow: false,
            presence: None,
            limits: None,
        }
    }

    /// The connection's protocol phase.
    pub fn phase(&self) -> Phase {
        self.session.phase()
    }

    /// Position of this connection in local channel `chan`'s member list.
    pub fn sub_index(&self, chan: ChanId) -> Option<usize> {
        self.subs.iter().position(|&(c, _)| c == chan)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Limits;
    use crate::shard::session::{Due, Effect, Session, Timers};

    const T: Timers = Timers {
        handshake: 10,
        ping: 25,
    };

    /// A session at `opened` fed `bytes` (all effects handed out).
    fn fed(opened: u32, bytes: &[u8]) -> (Session, Vec<Effect>) {
        let mut s = Session::new(opened);
        let mut buf = bytes.to_vec();
        let mut at = 0;
        let mut effects = Vec::new();
        while let Some(e) = s.poll(&mut buf, &mut at, &Limits::default(), true) {
            effects.push(e);
        }
        (s, effects)
    }

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn handshakes_and_requests_expire_waiting_requests_get_504() {
        let (s, _) = fed(0, b"GET /hea");
        assert_eq!(s.due(1, 9, T), Due::Nothing);
        assert_eq!(s.due(1, 10, T), Due::Expire);
        let (s, _) = fed(
            5,
            b"POST /api/publish HTTP/1.1\r\nContent-Length: 9\r\n\r\n{",
        );
        assert_eq!(s.due(1, 15, T), Due::Expire, "a body not completed in time");
        let (mut s, effects) = fed(5, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(matches!(effects[..], [Effect::Request(..)]));
        assert_eq!(s.due(1, 14, T), Due::Nothing);
        assert_eq!(s.due(1, 15, T), Due::Answer504, "the answer never came");
        assert!(s.responded(true, 20), "kept alive");
        assert_eq!(
            s.due(1, 29, T),
            Due::Nothing,
            "idle time counts from the answer"
        );
        assert_eq!(s.due(1, 30, T), Due::Expire);
    }

    #[test]
    fn open_connections_are_pinged_then_dropped_closing_ones_not_kept_forever() {
        let (mut s, effects) = fed(0, UPGRADE);
        assert!(matches!(effects[..], [Effect::Upgrade(_)]));
        s.open(false);
        // gen 0 has no jitter: pinged after one interval of silence.
        assert_eq!(s.due(0, 24, T), Due::Nothing);
        assert_eq!(s.due(0, 25, T), Due::Ping);
        s.pinged();
        assert_eq!(s.due(0, 30, T), Due::Nothing);
        assert_eq!(s.due(0, 50, T), Due::Expire);
        s.heard(50);
        assert_eq!(s.due(0, 74, T), Due::Nothing, "a pong resets the clock");
        // Jitter pings some connections up to half an interval early, never later.
        let early = (0..100).filter(|&g| s.due(g, 70, T) == Due::Ping).count();
        assert!(early > 0 && early < 100, "{early}");
        s.close();
        assert_eq!(s.due(1, 99, T), Due::Nothing);
        assert_eq!(s.due(1, 100, T), Due::Expire);
        // Huge configured values never overflow.
        let big = Timers {
            handshake: u32::MAX,
            ping: u32::MAX,
        };
        assert_eq!(s.due(7, 1000, big), Due::Nothing);
    }
}
