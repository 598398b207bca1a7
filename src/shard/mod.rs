//! An event-loop shard: one thread, one `mio::Poll`, a `Slab` of the connections it
//! owns, its own channel → subscribers index. The loop only routes events: sockets are
//! read until empty, broker messages are drained from the inbox, replies and
//! deliveries are queued during the turn and every touched connection is flushed once
//! at its end with vectored writes. With `--broker-threads inline` shard 0 also drives
//! the Redis reader and writer (`broker::redis::driver::Inline`): their sockets are on
//! its `Poll`, their turn is taken in its turn; they are non-blocking like its own.
//! A shard never blocks on anything but `poll`.
//!
//! `Shard` is a thin owner of parts that each own their state, in their own file:
//! `Wire` (`output.rs`: the connections, their output and the flush), `Fanout`
//! (`fanout.rs`, `history.rs`: channels, subscriptions, fan-out, history channels),
//! `Intake` (back-pressure, flush pacing), `Api` (presence link, HTTP API), `Admission`
//! (per-address and per-user counts, tokens), `Acceptor`; and `Ctx` (`ctx.rs`), what
//! they all read. `Shard` runs the loop, opens and closes connections and routes events
//! (`io.rs`: socket input and the inbox; `handler.rs`: client commands), handing each
//! part only what it needs. See docs/architecture.md, "The shard's module map".

mod accept;
pub mod admission;
mod api;
mod chan_history;
mod clock;
pub mod conn;
mod ctx;
mod fanout;
mod handler;
mod history;
mod history_query;
mod intake;
mod io;
mod key;
mod output;
pub mod outq;
pub mod session;
pub mod subs;
mod trim;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::health::Health;
use crate::ids::ShardId;
use crate::inbox::{Inbox, InboxSender};
use crate::metrics::Metrics;
use crate::msg::{BrokerHandle, ShardMsg};
pub use conn::ConnId;
use conn::{Conn, Key, Phase};
use ctx::Ctx;
use fanout::Fanout;
use output::{After, Wire};

const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX);

/// See `config::Tuning`.
const READS_PER_EVENT: usize = crate::config::TUNING.reads_per_event;
/// See `config::Tuning`.
const INBOX_BATCH: usize = crate::config::TUNING.inbox_batch;

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

/// The loop's owner: it polls, and routes each event to the part that owns the state
/// (`Wire`, `Fanout`, `Intake`, the presence link, admission).
pub struct Shard {
    ctx: Ctx,
    poll: Poll,
    data: Inbox<ShardMsg>,
    control: Inbox<ShardMsg>,
    acceptor: accept::Acceptor,
    /// The connections and their output (see `output.rs`).
    wire: Wire,
    /// The channels, their pending frames and history reads (see `fanout.rs`).
    fan: Fanout,
    /// Back-pressure and flush pacing (see `intake.rs`).
    intake: intake::Intake,
    /// Presence and the HTTP API (see `api.rs`).
    api: api::Api,
    /// Per-address and per-user counts, and the token verifier.
    admit: admission::Admission,
    /// The Redis reader and writer driven by this loop (see `ShardSetup`).
    inline_broker: Option<crate::broker::redis::Inline>,
}

impl Shard {
    pub fn new(s: ShardSetup) -> Shard {
        Shard {
            ctx: Ctx {
                id: s.id,
                config: s.config,
                metrics: s.metrics,
                health: s.health,
                broker: s.broker,
                clock: clock::Clock::new(Instant::now()),
                shutdown_deadline: None,
            },
            poll: s.poll,
            data: s.data,
            control: s.control,
            acceptor: accept::Acceptor::new(s.listener, s.peers),
            wire: Wire::new(),
            fan: Fanout::default(),
            intake: intake::Intake::new(Instant::now()),
            api: api::Api::new(s.presence),
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
                tracing::error!(shard = self.ctx.id.index(), "cannot register listener: {e}");
                return;
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let mut timeout = Duration::from_millis(250);
            if !self.wire.dirty.is_empty() {
                timeout = self.flush_due_in(Instant::now());
            }
            if !self.wire.read_again.is_empty() {
                timeout = Duration::ZERO;
            }
            if !self.fan.subs.unsubscribe_owed.is_empty() {
                // Unsubscribes the broker could not take are retried soon, not after
                // an idle poll.
                timeout = timeout.min(Duration::from_millis(5));
            }
            let stalled =
                self.intake.stalled(Instant::now(), self.wire.conns.len()) || self.intake.hold;
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
                    tracing::error!(shard = self.ctx.id.index(), "poll failed: {e}");
                    return;
                }
            }
            self.ctx.clock.update();
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
                            if let Some(c) = self.wire.conns.get_mut(key) {
                                c.blocked = false;
                                self.wire.mark_dirty(key);
                            }
                        }
                        let eof = event.is_read_closed() || event.is_error();
                        if event.is_readable() || eof {
                            self.on_readable(key, eof);
                        }
                    }
                }
            }
            let mut again = std::mem::take(&mut self.wire.read_again);
            for key in again.drain(..) {
                self.on_readable(key, true);
            }
            if self.wire.read_again.is_empty() {
                self.wire.read_again = again; // its capacity, for the next turn
            }
            // The publishes read from the sockets wake the writer thread once; it writes
            // them while this turn fans out and flushes.
            let _ = self.ctx.broker.wake_writer();
            if let Some(b) = self.inline_broker.as_mut() {
                // This turn's publishes go to Redis now; what Redis sent is in the
                // inbox before it is drained below.
                b.turn(Instant::now());
            }
            self.drain_inbox();
            if !self.wire.dirty.is_empty() {
                let now = Instant::now();
                if self.flush_due_in(now).is_zero() {
                    self.intake.last_flush = now;
                    self.flush();
                }
            }
            if self.ctx.clock.tick_due() {
                self.tick();
            }
            // History reads asked for since (rare) wake the writer thread too.
            let _ = self.ctx.broker.wake_writer();
            if let Some(deadline) = self.ctx.shutdown_deadline {
                if self.wire.conns.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
        }
        self.ctx.m().connections.store(0, Ordering::Relaxed);
        tracing::debug!(shard = self.ctx.id.index(), "shard stopped");
    }

    /// How long until the next flush may run (see `Intake::flush_due_in`).
    fn flush_due_in(&self, now: Instant) -> Duration {
        self.intake
            .flush_due_in(now, self.ctx.config.flush_interval)
    }

    /// The end-of-turn flush, then what it found: connections to remove, pipelined
    /// requests to parse.
    fn flush(&mut self) {
        self.wire.flush(&self.ctx, &mut self.intake);
        let mut after = std::mem::take(&mut self.wire.after);
        for (key, what) in after.drain(..) {
            match what {
                After::Close => self.close(key),
                After::Ingest => self.ingest(key, &mut []),
            }
        }
        if self.wire.after.is_empty() {
            self.wire.after = after; // its capacity, for the next flush
        }
    }

    fn accept(&mut self) {
        if self.ctx.shutdown_deadline.is_some() {
            return;
        }
        let mut kept = Vec::new();
        self.acceptor
            .accept(self.ctx.id, self.ctx.clock.coarse(), &mut |stream| {
                kept.push(stream)
            });
        for stream in kept {
            self.register(stream);
        }
    }

    fn register(&mut self, mut stream: TcpStream) {
        if self.ctx.shutdown_deadline.is_some() {
            return;
        }
        let Some(key) = self.wire.conns.next_key() else {
            return;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key.slot()), interest)
        {
            tracing::warn!(
                shard = self.ctx.id.index(),
                "cannot register connection: {e}"
            );
            return;
        }
        let w = &mut self.wire;
        w.next_gen = w.next_gen.wrapping_add(1);
        let inserted = w
            .conns
            .insert(Conn::new(stream, w.next_gen, self.ctx.clock.coarse()));
        debug_assert_eq!(inserted, key, "the slab fills the slot it named");
        self.ctx.m().connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a connection: unsubscribes it everywhere and drops its socket.
    fn close(&mut self, key: Key) {
        let Some(mut conn) = self.wire.conns.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if conn.lagging {
            self.intake.lag_ended(None);
        }
        self.api.closed(&self.ctx, &conn);
        self.admit.release(conn.limits.as_deref());
        let m = self.ctx.m();
        m.connections.fetch_sub(1, Ordering::Relaxed);
        m.subscriptions
            .fetch_sub(conn.subs.len() as u64, Ordering::Relaxed);
        for &(chan, pos) in &conn.subs {
            self.fan.leave(&self.ctx, &mut self.wire, chan, pos);
        }
    }

    /// Once a second: handshake timeouts, pings, and dropping silent clients.
    fn tick(&mut self) {
        self.fan.retry_history(&self.ctx, &self.wire);
        let now = self.ctx.clock.coarse();
        let config = &self.ctx.config;
        let handshake = u32::try_from(config.handshake_timeout.as_secs()).unwrap_or(u32::MAX);
        let ping = u32::try_from(config.ping_interval.as_secs()).unwrap_or(u32::MAX);
        let timers = session::Timers {
            handshake,
            ping: ping.max(1),
        };
        let mut expired = Vec::new();
        let mut unanswered = Vec::new();
        let mut to_ping = Vec::new();
        let mut to_close = Vec::new();
        let mut released = 0usize;
        for (key, c) in self.wire.conns.iter_mut() {
            if c.session.is_open() && c.outq.release_if_empty() {
                released += 1;
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
        if trim::after_release(released) {
            self.ctx
                .metrics
                .memory_trims
                .fetch_add(1, Ordering::Relaxed);
        }
        let ping_frame = crate::ws::frame::build(crate::ws::frame::OutOp::Ping, b"").freeze();
        for key in to_ping {
            self.wire.queue(&self.ctx, key, ping_frame.clone());
        }
        for (key, code, reason) in to_close {
            self.wire.close_ws(key, code, reason);
        }
        self.ctx
            .m()
            .timeouts
            .fetch_add((expired.len() + unanswered.len()) as u64, Ordering::Relaxed);
        for key in expired {
            self.close(key);
        }
        for key in unanswered {
            let response = crate::http::response::json_error(504, "no answer in time, try again");
            self.wire.respond_http(&self.ctx, key, response, false);
        }
        self.api.tick();
    }

    fn begin_shutdown(&mut self) {
        if self.ctx.shutdown_deadline.is_some() {
            return;
        }
        self.ctx.shutdown_deadline = Some(Instant::now() + self.ctx.config.shutdown_timeout);
        if let Some(mut l) = self.acceptor.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Everything owed is still written (bounded by the deadline): open WebSockets
        // get close 1001, a request waiting for an answer gets 503, a response or close
        // frame being written is finished; idle connections are dropped now.
        let keys = self.wire.conns.keys();
        for key in keys {
            let Some(c) = self.wire.conns.get_mut(key) else {
                continue;
            };
            match c.phase() {
                Phase::Open => self.wire.close_ws(key, 1001, "going away"),
                Phase::HttpWait => {
                    let response = crate::http::response::json_error(503, "server shutting down");
                    self.wire.respond_http(&self.ctx, key, response, false);
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
