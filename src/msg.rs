//! The messages threads send each other — shard → broker (`BrokerCmd`), broker and
//! presence → shard (`ShardMsg`) — and `BrokerHandle`, a shard's way to hand a command
//! to whichever bus the node runs. Plain data and non-blocking sends; no decisions.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{ConnId, ShardId};
use crate::inbox::InboxSender;
use crate::offset::{Offset, StreamId};
use crate::protocol::ErrorCode;

/// Where to send the outcome of a publish that carried an `id`.
#[derive(Debug)]
pub struct AckTo {
    pub shard: ShardId,
    pub conn: ConnId,
    /// The raw JSON of the client's id.
    pub id: Box<str>,
}

/// Shard → broker.
#[derive(Debug)]
pub enum BrokerCmd {
    /// This shard has its first local subscriber of `channel`. `epoch` is echoed back in
    /// `ShardMsg::Subscribed` so the shard can tell a stale confirmation from a fresh one.
    Subscribe {
        channel: Arc<str>,
        shard: ShardId,
        epoch: u32,
    },
    /// This shard's last local subscriber of `channel` left.
    Unsubscribe { channel: Arc<str>, shard: ShardId },
    /// Publish `payload` (valid JSON) on `channel`.
    Publish {
        channel: Box<str>,
        payload: Bytes,
        ack: Option<AckTo>,
    },
    /// Read a history channel (see `HistoryRead`); the answer goes where `to` says.
    History(Box<HistoryRead>),
}

/// One read of a channel's history.
#[derive(Debug)]
pub struct HistoryRead {
    pub channel: Arc<str>,
    /// Messages after this offset; `None`: the newest `limit` ones.
    pub since: Option<Offset>,
    /// Stop at this entry (inclusive); `None`: the newest.
    pub upto: Option<StreamId>,
    /// At most this many messages (0: only the channel's current offset).
    pub limit: usize,
    pub to: HistoryTo,
}

/// Who asked for a history read, and so what its answer becomes.
#[derive(Debug)]
pub enum HistoryTo {
    /// A shard brings its local channel up to date (first subscriber, or repairing a
    /// gap): answered `ShardMsg::Synced` with delivery frames. `tag` tells a stale
    /// answer from the current one.
    Sync { shard: ShardId, tag: u32 },
    /// A subscriber resuming with `since`: answered `ShardMsg::Caught` with delivery
    /// frames for that connection only.
    Catch {
        shard: ShardId,
        conn: ConnId,
        tag: u32,
    },
    /// A client's `{"type":"history"}`: answered with a `Reply` frame.
    Client {
        shard: ShardId,
        conn: ConnId,
        id: Option<Box<str>>,
    },
    /// `GET /api/channels/{C}/history`: answered with an HTTP `Reply`.
    Http { shard: ShardId, conn: ConnId },
}

impl HistoryTo {
    pub fn shard(&self) -> ShardId {
        match self {
            HistoryTo::Sync { shard, .. }
            | HistoryTo::Catch { shard, .. }
            | HistoryTo::Client { shard, .. }
            | HistoryTo::Http { shard, .. } => *shard,
        }
    }
}

/// What a sync or catch-up read found: delivery frames (each with its offset) after the
/// asked position, the channel's newest offset, and whether messages between the asked
/// position and the first frame are gone (trimmed, expired, or another epoch).
#[derive(Debug, Default)]
pub struct Replay {
    pub frames: Vec<(Offset, Bytes)>,
    pub top: Offset,
    pub gap: bool,
}

/// Broker → shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// A delivery frame for every local subscriber of `channel`, built at `at`
    /// (the start of the publish→send latency the shard measures).
    Deliver {
        channel: Arc<str>,
        frame: Bytes,
        at: std::time::Instant,
        /// The message's history offset (history channels).
        offset: Option<Offset>,
    },
    /// The answer to a `HistoryTo::Sync` read (`Err`: Redis could not answer). Control
    /// queue.
    Synced {
        channel: Arc<str>,
        tag: u32,
        replay: Result<Replay, ()>,
    },
    /// The answer to a `HistoryTo::Catch` read. Control queue.
    Caught {
        channel: Arc<str>,
        conn: ConnId,
        tag: u32,
        replay: Result<Replay, ()>,
    },
    /// The broker subscription to `channel` is live for the subscribe of `epoch`.
    Subscribed { channel: Arc<str>, epoch: u32 },
    /// Messages on `channel` may have been missed (broker resubscribed, or a delivery
    /// was dropped). Sent on the data queue, in stream order with the deliveries.
    Gap { channel: Arc<str> },
    /// The broker connection was lost: no local channel is live until the broker
    /// confirms it again with `Subscribed` (same epoch). Control queue.
    Unconfirmed,
    /// `Unconfirmed` for one channel (Redis Cluster: the connection to its primary was
    /// lost, or its slot moved). Control queue.
    UnconfirmedChannel { channel: Arc<str> },
    /// Outcome of a publish with an id.
    Published {
        conn: ConnId,
        id: Box<str>,
        /// `Ok(Some(offset))` for a history channel.
        result: Result<Option<Offset>, ErrorCode>,
    },
    /// Bytes for one connection (a presence answer, a deferred HTTP response): queued if
    /// the connection still has generation `conn.gen`; closed once written if
    /// `close_after`.
    Reply {
        conn: ConnId,
        frame: Bytes,
        close_after: bool,
    },
    /// Close every WebSocket of this user with 4004 (`POST /api/users/{U}/disconnect`,
    /// from any node through the control channel). Control queue.
    Disconnect { user: Arc<str> },
    /// A connection accepted by another shard, to be owned by this one.
    Accept(mio::net::TcpStream),
    /// Stop accepting, close every client with 1001, flush and exit.
    Shutdown,
}

/// A shard's way to reach the broker, whichever bus the node runs.
#[derive(Clone)]
pub enum BrokerHandle {
    /// Embedded mode: one in-process bus thread takes every command.
    Memory(crossbeam_channel::Sender<BrokerCmd>),
    /// Cluster mode: subscriptions go to the Redis reader, publishes to the writer.
    Redis {
        reader: InboxSender<BrokerCmd>,
        writer: InboxSender<BrokerCmd>,
        /// A publish or read was queued for the writer without waking it: `wake_writer`
        /// wakes it once. (Each clone, one per shard, has its own.)
        wake_writer: std::cell::Cell<bool>,
    },
}

impl BrokerHandle {
    /// The Redis reader's and writer's queues.
    pub fn redis(reader: InboxSender<BrokerCmd>, writer: InboxSender<BrokerCmd>) -> BrokerHandle {
        BrokerHandle::Redis {
            reader,
            writer,
            wake_writer: std::cell::Cell::new(false),
        }
    }

    /// Hands a command over without blocking; gives it back when the broker cannot take it.
    /// Publishes and reads wake the writer only at `wake_writer`: a shard turn's
    /// publishes cost the writer one wake-up, not one each.
    pub fn send(&self, cmd: BrokerCmd) -> Result<(), BrokerCmd> {
        match self {
            BrokerHandle::Memory(tx) => tx.try_send(cmd).map_err(|e| e.into_inner()),
            BrokerHandle::Redis {
                reader,
                writer,
                wake_writer,
            } => match cmd {
                BrokerCmd::Publish { .. } | BrokerCmd::History(_) => {
                    writer.send_quiet(cmd)?;
                    wake_writer.set(true);
                    Ok(())
                }
                _ => reader.send(cmd),
            },
        }
    }

    /// Wakes the writer (if parked) when anything was queued for it since the last call.
    /// True if that took a wake-up syscall. A shard calls it once its sockets are read
    /// (the turn's publishes) and at the end of its turn (reads asked for meanwhile).
    pub fn wake_writer(&self) -> bool {
        match self {
            BrokerHandle::Redis {
                writer,
                wake_writer,
                ..
            } => wake_writer.replace(false) && writer.wake(),
            BrokerHandle::Memory(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::inbox;
    use mio::{Events, Poll, Token, Waker};
    use std::time::Duration;

    fn publish(n: usize) -> BrokerCmd {
        BrokerCmd::Publish {
            channel: format!("c{n}").into(),
            payload: Bytes::from_static(b"1"),
            ack: None,
        }
    }

    /// The writer is woken once per shard turn however many publishes the turn queued,
    /// even when it parks again between them (before: one wake-up per publish then).
    #[test]
    fn a_turn_of_publishes_wakes_the_writer_once() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (writer_tx, writer_rx) = inbox::<BrokerCmd>(waker.clone(), Some(64));
        let (reader_tx, _reader_rx) = inbox::<BrokerCmd>(waker, Some(64));
        let handle = BrokerHandle::redis(reader_tx, writer_tx);
        let mut wakes = 0;
        let mut events = Events::with_capacity(4);
        for _turn in 0..3 {
            for n in 0..10 {
                // The writer drains what it has and parks again (it is fast).
                while writer_rx.try_recv().is_some() {}
                writer_rx.unpark();
                assert!(writer_rx.park());
                handle.send(publish(n)).unwrap();
            }
            if handle.wake_writer() {
                wakes += 1;
            }
            // Nothing more queued: another end of turn wakes nobody.
            assert!(!handle.wake_writer());
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(events.iter().count(), 1, "one wake-up per turn");
            writer_rx.unpark();
        }
        assert_eq!(wakes, 3);
    }
}
