//! Shard 0's side of accepting connections: the listener, the round-robin choice of the
//! shard that will own each new socket, and the pause after an accept error (out of
//! file descriptors) so a listener that cannot be drained is not spun on. Hands sockets
//! out; never reads or writes one.

use mio::net::{TcpListener, TcpStream};

use crate::ids::ShardId;
use crate::inbox::InboxSender;
use crate::msg::ShardMsg;

/// The accepting side of a shard (only shard 0 has a listener).
pub struct Acceptor {
    pub listener: Option<TcpListener>,
    /// Every shard's control queue, in shard order (empty: this shard keeps all).
    peers: Vec<InboxSender<ShardMsg>>,
    next_peer: usize,
    /// Coarse second before which accepting stays paused.
    paused_until: u32,
}

impl Acceptor {
    pub fn new(listener: Option<TcpListener>, peers: Vec<InboxSender<ShardMsg>>) -> Acceptor {
        Acceptor {
            listener,
            peers,
            next_peer: 0,
            paused_until: 0,
        }
    }

    /// Accepts every pending connection at coarse second `now`. Sockets for shard `me`
    /// (or that another shard could not take) go to `keep`; the others are handed to
    /// their shard.
    pub fn accept(&mut self, me: ShardId, now: u32, keep: &mut dyn FnMut(TcpStream)) {
        if self.paused_until > now {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let target = self.next_peer % self.peers.len().max(1);
                    self.next_peer = self.next_peer.wrapping_add(1);
                    if target == me.index() || self.peers.is_empty() {
                        keep(stream);
                    } else if let Err(ShardMsg::Accept(stream)) =
                        self.peers[target].send(ShardMsg::Accept(stream))
                    {
                        keep(stream);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or similar: pause accepting
                    // for a second instead of spinning on a listener we cannot drain.
                    tracing::warn!(shard = me.index(), "accept failed, pausing 1 s: {e}");
                    self.paused_until = now + 1;
                    return;
                }
            }
        }
    }
}
