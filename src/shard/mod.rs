//! An event-loop shard: one thread, one `mio::Poll`, a `Slab` of the connections it
//! owns, its own channel → subscribers index. The loop only routes events: sockets are
//! read until empty, broker messages are drained from the inbox, replies and
//! deliveries are queued during the turn and every touched connection is flushed once
//! at its end with vectored writes. With `--broker-threads inline` shard 0 also drives
//! the Redis reader and writer (`broker::redis::driver::Inline`): their sockets are on
//! its `Poll`, their turn is taken in its turn; they are non-blocking like its own.
//! A shard never blocks on anything but `poll`.

mod accept;
pub mod admission;
mod api;
mod chan_history;
mod clock;
pub mod conn;
mod handler;
mod history;
mod history_query;
mod intake;
mod io;
mod output;
pub mod outq;
pub mod session;
pub mod subs;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subs::ChanId;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::health::Health;
use crate::ids::ShardId;
use crate::inbox::{Inbox, InboxSender};
use crate::metrics::Metrics;
use crate::msg::{BrokerHandle, ShardMsg};
pub use conn::ConnId;
use conn::{Conn, Conns, Key, Phase};
use subs::SubIndex;

const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX);

/// See `config::Tuning`.
const READ_BUF: usize = crate::config::TUNING.read_buf;
/// See `config::Tuning`.
const READS_PER_EVENT: usize = crate::config::TUNING.reads_per_event;
/// See `config::Tuning`.
const INBOX_BATCH: usize = crate::config::TUNING.inbox_batch;
/// See `config::Tuning`.
const MAX_STALL: Duration = crate::config::TUNING.max_stall;

/// Everything a shard needs from the node, handed over at start.
pub struct ShardSetup {
    pub id: ShardId,
    pub poll: Poll,
    pub data: Inbox<ShardMsg>,
    pub control: Inbox<ShardMsg>,
    /// Shard 0 owns the listener and hands connections to the others round robin.
    pub listener: Option<TcpListener>,
    pub peers: Vec<InboxSender<ShardMsg>>,
    pub broker: BrokerHandle,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub presence: Option<crate::presence::PresenceHandle>,
    /// Connections per client address, shared by the node's shards.
    pub per_ip: Arc<admission::PerIp>,
    /// Connections per authenticated user, shared by the node's shards.
    pub per_user: Arc<admission::PerUser>,
    /// Connection authentication (`--jwt-*`); `None`: off.
    pub auth: Option<Arc<crate::auth::Verifier>>,
    /// The Redis reader and writer, when they run on this shard's loop (shard 0 with
    /// `--broker-threads inline`).
    pub inline_broker: Option<crate::broker::redis::Inline>,
}

pub struct Shard {
    id: ShardId,
    poll: Poll,
    data: Inbox<ShardMsg>,
    control: Inbox<ShardMsg>,
    acceptor: accept::Acceptor,
    broker: BrokerHandle,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    conns: Conns,
    subs: SubIndex,
    /// Connections with queued output, flushed at the end of the turn.
    dirty: Vec<Key>,
    /// Connections that still had input when their read budget ran out.
    read_again: Vec<Key>,
    read_buf: Vec<u8>,
    next_gen: u32,
    /// The coarse clock of timeouts and the once-a-second tick.
    clock: clock::Clock,
    shutdown_deadline: Option<Instant>,
    /// Channels with frames waiting for this turn's `fan_out` (id, name to check it).
    batched: Vec<(ChanId, std::sync::Arc<str>)>,
    /// History reads to ask again, and read tags (see `chan_history::Reads`).
    reads: chan_history::Reads,
    /// Back-pressure and flush pacing (see `intake.rs`).
    intake: intake::Intake,
    presence: Option<api::PresenceLink>,
    /// Per-address and per-user counts, and the token verifier.
    admit: admission::Admission,
    /// The Redis reader and writer driven by this loop (see `ShardSetup`).
    inline_broker: Option<crate::broker::redis::Inline>,
}

impl Shard {
    pub fn new(s: ShardSetup) -> Shard {
        Shard {
            id: s.id,
            poll: s.poll,
            data: s.data,
            control: s.control,
            acceptor: accept::Acceptor::new(s.listener, s.peers),
            broker: s.broker,
            config: s.config,
            metrics: s.metrics,
            health: s.health,
            conns: Conns::default(),
            subs: SubIndex::default(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            read_buf: vec![0; READ_BUF],
            next_gen: 0,
            clock: clock::Clock::new(Instant::now()),
            shutdown_deadline: None,
            batched: Vec::new(),
            reads: chan_history::Reads::default(),
            intake: intake::Intake::new(Instant::now()),
            presence: s.presence.map(api::PresenceLink::new),
            admit: admission::Admission {
                per_ip: s.per_ip,
                per_user: s.per_user,
                auth: s.auth,
            },
            inline_broker: s.inline_broker,
        }
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        if let Some(l) = self.acceptor.listener.as_mut() {
            if let Err(e) = self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
            {
                tracing::error!(shard = self.id.index(), "cannot register listener: {e}");
                return;
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let mut timeout = Duration::from_millis(250);
            if !self.dirty.is_empty() {
                timeout = self.flush_due_in(Instant::now());
            }
            if !self.read_again.is_empty() {
                timeout = Duration::ZERO;
            }
            if !self.subs.unsubscribe_owed.is_empty() {
                // Unsubscribes the broker could not take are retried soon, not after
                // an idle poll.
                timeout = timeout.min(Duration::from_millis(5));
            }
            let stalled = self.intake_stalled(Instant::now()) || self.intake.hold;
            if stalled {
                // Deliveries wait (and overflow into counted drops) until sockets drain or
                // the next flush; only writable events, control messages, the flush or
                // the stall limit wake us.
                timeout = timeout.min(Duration::from_millis(10));
            }
            if let Some(b) = &self.inline_broker {
                timeout = timeout.min(b.timeout(Instant::now()));
            }
            if !timeout.is_zero() {
                if !stalled && !self.data.park() {
                    timeout = Duration::ZERO;
                } else if !self.control.park() {
                    self.data.unpark();
                    timeout = Duration::ZERO;
                } else if self.inline_broker.as_ref().is_some_and(|b| !b.park()) {
                    self.data.unpark();
                    self.control.unpark();
                    timeout = Duration::ZERO;
                }
            }
            let timeout = Some(timeout);
            let polled = self.poll.poll(&mut events, timeout);
            self.data.unpark();
            self.control.unpark();
            if let Some(b) = &self.inline_broker {
                b.unpark();
            }
            if let Err(e) = polled {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(shard = self.id.index(), "poll failed: {e}");
                    return;
                }
            }
            self.clock.update();
            let now = Instant::now();
            for event in events.iter() {
                if let Some(b) = self.inline_broker.as_mut() {
                    if b.ready(event.token(), now) {
                        continue;
                    }
                }
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(slot) => {
                        let Some(key) = Key::from_slot(slot) else {
                            continue;
                        };
                        if event.is_writable() {
                            if let Some(c) = self.conns.get_mut(key) {
                                c.blocked = false;
                                self.mark_dirty(key);
                            }
                        }
                        let eof = event.is_read_closed() || event.is_error();
                        if event.is_readable() || eof {
                            self.on_readable(key, eof);
                        }
                    }
                }
            }
            let mut again = std::mem::take(&mut self.read_again);
            for key in again.drain(..) {
                self.on_readable(key, true);
            }
            if self.read_again.is_empty() {
                self.read_again = again; // its capacity, for the next turn
            }
            // The publishes read from the sockets wake the writer thread once; it writes
            // them while this turn fans out and flushes.
            let _ = self.broker.wake_writer();
            if let Some(b) = self.inline_broker.as_mut() {
                // This turn's publishes go to Redis now; what Redis sent is in the
                // inbox before it is drained below.
                b.turn(Instant::now());
            }
            self.drain_inbox();
            if !self.dirty.is_empty() {
                let now = Instant::now();
                if self.flush_due_in(now).is_zero() {
                    self.intake.last_flush = now;
                    self.flush_dirty();
                }
            }
            if self.clock.tick_due() {
                self.tick();
            }
            // History reads asked for since (rare) wake the writer thread too.
            let _ = self.broker.wake_writer();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
        }
        let shard = &self.metrics.shards[self.id.index()];
        shard.connections.store(0, Ordering::Relaxed);
        tracing::debug!(shard = self.id.index(), "shard stopped");
    }

    fn accept(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let mut kept = Vec::new();
        self.acceptor
            .accept(self.id, self.clock.coarse(), &mut |stream| {
                kept.push(stream)
            });
        for stream in kept {
            self.register(stream);
        }
    }

    fn register(&mut self, mut stream: TcpStream) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let Some(key) = self.conns.next_key() else {
            return;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key.slot()), interest)
        {
            tracing::warn!(shard = self.id.index(), "cannot register connection: {e}");
            return;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let inserted = self
            .conns
            .insert(Conn::new(stream, self.next_gen, self.clock.coarse()));
        debug_assert_eq!(inserted, key, "the slab fills the slot it named");
        self.metrics.shards[self.id.index()]
            .connections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a connection: unsubscribes it everywhere and drops its socket.
    fn close(&mut self, key: Key) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if conn.lagging {
            self.intake.lag_ended(None);
        }
        self.presence_closed(&conn);
        if let Some(limits) = conn.limits.as_deref() {
            if let Some(ip) = &limits.ip {
                self.admit.per_ip.release(ip);
            }
            if let Some(user) = &limits.user {
                self.admit.per_user.release(user);
            }
        }
        let m = &self.metrics.shards[self.id.index()];
        m.connections.fetch_sub(1, Ordering::Relaxed);
        m.subscriptions
            .fetch_sub(conn.subs.len() as u64, Ordering::Relaxed);
        for &(chan, pos) in &conn.subs {
            self.leave(chan, pos);
        }
    }

    /// Takes member `pos` out of local channel `chan`, fixing the position of the member
    /// moved into its place, and tells the broker when the channel empties.
    fn leave(&mut self, chan: ChanId, pos: u32) {
        let removed = self.subs.remove(chan, pos);
        if let Some((moved_key, new_pos)) = removed.moved {
            if let Some(c) = self.conns.get_mut(Key::from_raw(moved_key)) {
                if let Some(i) = c.sub_index(chan) {
                    c.subs[i].1 = new_pos;
                }
            }
        }
        if let Some(channel) = removed.emptied {
            self.unsubscribe_broker(channel);
        }
    }

    /// Once a second: handshake timeouts, pings, and dropping silent clients.
    fn tick(&mut self) {
        self.retry_history();
        let now = self.clock.coarse();
        let handshake = u32::try_from(self.config.handshake_timeout.as_secs()).unwrap_or(u32::MAX);
        let ping = u32::try_from(self.config.ping_interval.as_secs()).unwrap_or(u32::MAX);
        let timers = session::Timers {
            handshake,
            ping: ping.max(1),
        };
        let mut expired = Vec::new();
        let mut unanswered = Vec::new();
        let mut to_ping = Vec::new();
        let mut to_close = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if c.session.is_open() {
                c.outq.release_if_empty();
            }
            match c.session.due(c.gen, now, timers) {
                session::Due::Nothing => {}
                session::Due::Ping => {
                    c.session.pinged();
                    to_ping.push(key);
                }
                session::Due::Expire => expired.push(key),
                session::Due::Answer504 => unanswered.push(key),
                session::Due::Close { code, reason } => to_close.push((key, code, reason)),
            }
        }
        let ping_frame = crate::ws::frame::build(crate::ws::frame::OutOp::Ping, b"").freeze();
        for key in to_ping {
            self.queue(key, ping_frame.clone());
        }
        for (key, code, reason) in to_close {
            self.close_ws(key, code, reason);
        }
        let m = &self.metrics.shards[self.id.index()];
        m.timeouts
            .fetch_add((expired.len() + unanswered.len()) as u64, Ordering::Relaxed);
        for key in expired {
            self.close(key);
        }
        for key in unanswered {
            let response = crate::http::response::json_error(504, "no answer in time, try again");
            self.respond_http(key, response, false);
        }
        self.presence_tick();
    }

    /// Admission checks on a WebSocket upgrade (origin policy, user parameter); every
    /// refusal is counted.
    fn check_upgrade(
        &self,
        head: &crate::ws::handshake::RequestHead,
    ) -> Result<(), (u16, &'static str)> {
        let verdict = self.admit_upgrade(head);
        if verdict.is_err() {
            self.metrics.shards[self.id.index()]
                .upgrades_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn http_context(&self) -> crate::http::HttpContext<'_> {
        crate::http::HttpContext {
            config: &self.config,
            metrics: &self.metrics,
            health: &self.health,
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        if let Some(mut l) = self.acceptor.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Everything owed is still written (bounded by the deadline): open WebSockets
        // get close 1001, a request waiting for an answer gets 503, a response or close
        // frame being written is finished; idle connections are dropped now.
        let keys = self.conns.keys();
        for key in keys {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            match c.phase() {
                Phase::Open => self.close_ws(key, 1001, "going away"),
                Phase::HttpWait => {
                    let response = crate::http::response::json_error(503, "server shutting down");
                    self.respond_http(key, response, false);
                }
                Phase::Closing => {}
                Phase::Handshake | Phase::HttpBody if !c.outq.is_empty() => {
                    c.session.close();
                }
                Phase::Handshake | Phase::HttpBody => self.close(key),
            }
        }
    }
}
