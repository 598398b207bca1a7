//! `Wire`, the shard's connection table and its write side: it owns the connections
//! (`Conns`), the dirty list, the read buffer and the read-again list; it queues shared
//! frames to connections (replies, close frames, HTTP responses, a subscriber's own
//! replay), applies the slow-consumer policy, and runs the end-of-turn flush. Frames
//! are `Bytes` clones, never copies; each touched connection is written once per flush.
//! It never decides what to send, and never removes a connection itself: what a flush
//! finds (a connection to close, pipelined input to parse) is handed back as `After`.
//!
//! What reaches a client is always a parseable stream: a close frame is the last thing
//! ever queued on a WebSocket (`close_ws`), the slow-consumer policy drops only
//! deliveries and never the rest of a partly written frame, and HTTP responses are not
//! subject to the WebSocket policy at all (`respond_http`; their size is bounded by what
//! builds them, and a keep-alive connection gets its next request parsed only once the
//! previous response is written).

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use super::conn::{Conn, ConnId, Conns, Key, Phase};
use super::ctx::Ctx;
use super::intake::Intake;
use super::outq::{self, Kind};
use super::subs::{ChanId, Pos};

/// See `config::Tuning`.
const READ_BUF: usize = crate::config::TUNING.read_buf;
use crate::config::{Config, SlowPolicy};
use crate::protocol::{reply, ErrorCode};

/// What the flush found a connection needs from its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Its queue is written and it is done (closing, or the peer left): remove it.
    Close,
    /// A keep-alive connection whose response is written: parse what it pipelined.
    Ingest,
}

/// The shard's connections and everything about writing to them.
pub struct Wire {
    pub conns: Conns,
    /// Connections with queued output, flushed at the end of the turn.
    pub dirty: Vec<Key>,
    /// Connections that still had input when their read budget ran out.
    pub read_again: Vec<Key>,
    /// The one read buffer every socket of the shard is read into.
    pub read_buf: Vec<u8>,
    /// The generation of the last connection registered (see `ConnId`).
    pub next_gen: u32,
    /// What the last flush left for the owner to do, in order (kept for its capacity).
    pub after: Vec<(Key, After)>,
}

impl Wire {
    pub fn new() -> Wire {
        Wire {
            conns: Conns::default(),
            dirty: Vec::new(),
            read_again: Vec::new(),
            read_buf: vec![0; READ_BUF],
            next_gen: 0,
            after: Vec::new(),
        }
    }

    /// The slow-consumer policy, applied when a WebSocket's queue passes the limit.
    /// `close`: everything not yet started is dropped and close 4000 is queued after
    /// the rest of a partly written frame. `drop-oldest`: the oldest deliveries are
    /// dropped (never a reply, a control frame or a `gap`) and the client is told once;
    /// if what cannot be dropped still holds twice the limit (a client that sends
    /// pings or commands and never reads the answers), it is closed as under `close`.
    pub fn over_limit(conn: &mut Conn, m: &crate::metrics::ShardMetrics, config: &Config) {
        let limit = config.limits.outbound_limit;
        if config.slow_policy == SlowPolicy::DropOldest {
            let dropped = conn.outq.drop_oldest(limit);
            m.slow_consumer_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            if conn.outq.bytes() <= limit.saturating_mul(2) {
                if !conn.told_slow {
                    conn.told_slow = true;
                    conn.outq.push(crate::protocol::reply::error(
                        crate::protocol::ErrorCode::SlowConsumer,
                        "you are not reading fast enough: oldest messages were dropped",
                        None,
                        None,
                    ));
                }
                return;
            }
        }
        conn.outq.clear_unstarted();
        conn.outq
            .push(crate::ws::frame::close(4000, "slow consumer").freeze());
        conn.session.close();
        m.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a reply or control frame for an open WebSocket (never dropped by the
    /// drop-oldest policy). Nothing is queued once a close frame is.
    pub fn queue(&mut self, ctx: &Ctx, key: Key, frame: Bytes) {
        let limit = ctx.config.limits.outbound_limit;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.session.is_open() {
            return;
        }
        conn.outq.push(frame);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
        // The echo endpoint answers messages of up to 16 MiB by design.
        let limit = if conn.session.is_echo() {
            limit.max(4 * crate::ws::ECHO_MAX_MESSAGE)
        } else {
            limit
        };
        if conn.outq.bytes() > limit {
            Self::over_limit(conn, ctx.m(), &ctx.config);
        }
    }

    /// Queues a delivery (droppable by the slow-consumer policy) to one open WebSocket:
    /// a subscriber's own history replay.
    pub fn queue_delivery(&mut self, ctx: &Ctx, key: Key, frame: Bytes) {
        let limit = ctx.config.limits.outbound_limit;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.session.is_open() {
            return;
        }
        conn.outq.push_kind(frame, Kind::Delivery);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
        ctx.m().messages_out.fetch_add(1, Ordering::Relaxed);
        if conn.outq.bytes() > limit {
            Self::over_limit(conn, ctx.m(), &ctx.config);
        }
    }

    /// Queues a WebSocket close frame: the last frame this connection will ever get
    /// (RFC 6455 §5.5.1). The socket is dropped once it is written (or when the peer
    /// does not read it in time, see `tick`). A connection already closing is left as
    /// it is.
    pub fn close_ws(&mut self, key: Key, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.close() {
            self.queue_close_frame(key, code, reason);
        }
    }

    /// Queues the close frame of a session that decided to close (its phase is
    /// already `Closing`: nothing else is queued after this frame).
    pub fn queue_close_frame(&mut self, key: Key, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.outq
            .push(crate::ws::frame::close(code, reason).freeze());
        self.mark_dirty(key);
    }

    /// Queues a complete HTTP response. With `keep_alive` (the request allows it, the
    /// peer has not closed its side and the node is not shutting down) the connection
    /// waits for its next request once this one is written; otherwise it closes then.
    pub fn respond_http(&mut self, ctx: &Ctx, key: Key, mut response: Vec<u8>, keep_alive: bool) {
        let keep_alive = keep_alive && ctx.shutdown_deadline.is_none();
        let now = ctx.clock.coarse();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.phase(), Phase::Open | Phase::Closing) {
            return; // not an HTTP connection, or its final answer is already queued
        }
        if conn.session.responded(keep_alive, now) {
            crate::http::response::set_keep_alive(&mut response);
        }
        conn.outq.push(response.into());
        self.mark_dirty(key);
    }

    pub fn mark_dirty(&mut self, key: Key) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The end-of-turn flush: one vectored write (or a few) per touched connection.
    /// Connections to remove or to parse again are left in `after`, in order.
    pub fn flush(&mut self, ctx: &Ctx, intake: &mut Intake) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut bytes = 0u64;
        let mut writes = 0u64;
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            conn.queued_since_flush = 0;
            if conn.blocked {
                continue;
            }
            writes += 1;
            match conn.outq.write_to(&mut conn.stream) {
                Ok((outq::Flushed::Empty, n)) => {
                    bytes += n as u64;
                    conn.told_slow = false;
                    if conn.lagging {
                        conn.lagging = false;
                        intake.lag_ended(Some(Instant::now()));
                    }
                    match conn.phase() {
                        Phase::Closing => self.after.push((key, After::Close)),
                        // The peer closed its side: nothing more will be asked.
                        Phase::Handshake | Phase::HttpBody if conn.session.read_closed() => {
                            self.after.push((key, After::Close))
                        }
                        // A keep-alive connection whose response is written: parse
                        // what it pipelined meanwhile.
                        Phase::Handshake if conn.session.has_input() => {
                            self.after.push((key, After::Ingest))
                        }
                        _ => {}
                    }
                }
                Ok((outq::Flushed::Blocked, n)) => {
                    bytes += n as u64;
                    conn.blocked = true;
                    intake.lag_seen(conn.lagging, n, Instant::now());
                    conn.lagging = true;
                }
                Err(_) => self.after.push((key, After::Close)),
            }
        }
        ctx.m().bytes_out.fetch_add(bytes, Ordering::Relaxed);
        intake.flushed(writes);
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Queues an error reply (counted as a client error).
    pub fn simple_error(
        &mut self,
        ctx: &Ctx,
        key: Key,
        code: ErrorCode,
        message: &'static str,
        id: Option<&str>,
        channel: Option<&str>,
    ) {
        ctx.m().client_errors.fetch_add(1, Ordering::Relaxed);
        self.queue(ctx, key, reply::error(code, message, id, channel));
    }

    /// The id of connection `key` (with its generation) as other threads name it.
    pub fn conn_id(&self, key: Key) -> Option<ConnId> {
        let gen = self.conns.get(key)?.gen;
        Some(ConnId {
            key: key.raw(),
            gen,
        })
    }

    /// Records connection `key`'s new position in local channel `id`.
    pub fn set_pos(&mut self, key: Key, id: ChanId, pos: Pos) {
        if let Some(c) = self.conns.get_mut(key) {
            if let Some(i) = c.sub_index(id) {
                c.subs[i].1 = pos;
            }
        }
    }
}
