//! The two drivers of the Redis reader and writer state machines (`Turn`): a thread of
//! their own (`run`: its own `Poll`, waker and stop flag), or shard 0's event loop
//! (`Inline`: both links registered on the shard's `Poll` with their own tokens, their
//! turn taken inside the shard's turn). A driver only polls and calls the machine; it
//! decides nothing about Redis, and the inline driver never blocks the shard (the links
//! are non-blocking, exactly as on their own threads).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::reader::Reader;
use super::turn::Turn;
use super::writer::Writer;
use crate::broker::BrokerCmd;
use crate::inbox::Inbox;

/// Runs `machine` on the calling thread until `stop` is set: poll, then one turn.
pub fn run<T: Turn>(
    mut machine: T,
    mut poll: Poll,
    inbox: Inbox<BrokerCmd>,
    stop: Arc<AtomicBool>,
) {
    let mut events = Events::with_capacity(64);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let mut timeout = machine.timeout(now);
        if !inbox.park() {
            timeout = Duration::ZERO;
        }
        let _ = poll.poll(&mut events, Some(timeout));
        inbox.unpark();
        let now = Instant::now();
        if events.iter().any(|e| e.token() == machine.token()) {
            machine.ready(now);
        }
        machine.turn(&inbox, now);
    }
}

/// Token of the reader's link on the shard's `Poll` (the shard's own tokens are slab
/// slots, far below, and `usize::MAX - 1`, `usize::MAX`).
pub const INLINE_READER: Token = Token(usize::MAX - 2);
/// Token of the writer's link on the shard's `Poll`.
pub const INLINE_WRITER: Token = Token(usize::MAX - 3);

/// The reader and writer on shard 0's loop. Their inboxes are woken through shard 0's
/// waker: the other shards' commands wake it like a delivery would; shard 0's own
/// commands find it running (not parked), so queuing one is a lock-free push and no
/// syscall, and the reader's deliveries to shard 0 likewise.
pub struct Inline {
    reader: Reader,
    writer: Writer,
    reader_inbox: Inbox<BrokerCmd>,
    writer_inbox: Inbox<BrokerCmd>,
}

impl Inline {
    pub(super) fn new(
        reader: Reader,
        writer: Writer,
        reader_inbox: Inbox<BrokerCmd>,
        writer_inbox: Inbox<BrokerCmd>,
    ) -> Inline {
        Inline {
            reader,
            writer,
            reader_inbox,
            writer_inbox,
        }
    }

    /// Handles a poll event if `token` is one of the links'; false if it is not.
    pub fn ready(&mut self, token: Token, now: Instant) -> bool {
        if token == INLINE_READER {
            self.reader.ready(now);
        } else if token == INLINE_WRITER {
            self.writer.ready(now);
        } else {
            return false;
        }
        true
    }

    /// The reader's and the writer's turn, taken in the shard's turn after its sockets
    /// were read (this turn's publishes are written to Redis now) and before its inbox
    /// is drained (what the reader delivered now is fanned out in this same turn).
    pub fn turn(&mut self, now: Instant) {
        self.reader.turn(&self.reader_inbox, now);
        // After the reader: its probe publish goes out in this turn.
        self.writer.turn(&self.writer_inbox, now);
    }

    /// How long the shard may sleep before the links need a turn.
    pub fn timeout(&self, now: Instant) -> Duration {
        self.reader.timeout(now).min(self.writer.timeout(now))
    }

    /// Announces that the shard is about to block in `poll` (see `Inbox::park`); false
    /// (and nothing parked) when commands are waiting.
    pub fn park(&self) -> bool {
        if !self.reader_inbox.park() {
            return false;
        }
        if !self.writer_inbox.park() {
            self.reader_inbox.unpark();
            return false;
        }
        true
    }

    pub fn unpark(&self) {
        self.reader_inbox.unpark();
        self.writer_inbox.unpark();
    }
}
