//! The write side of a shard: queuing shared frames to connections (deliveries, replies,
//! close frames, HTTP responses), the slow-consumer policy, and the end-of-turn flush
//! with its pacing. Frames are `Bytes` clones, never copies; each touched connection is
//! written once per flush.
//!
//! What reaches a client is always a parseable stream: a close frame is the last thing
//! ever queued on a WebSocket (`close_ws`), the slow-consumer policy drops only
//! deliveries and never the rest of a partly written frame, and HTTP responses are not
//! subject to the WebSocket policy at all (`respond_http`; their size is bounded by what
//! builds them, and a keep-alive connection gets its next request parsed only once the
//! previous response is written).

use super::subs::ChanId;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::chan_history::take_live;
use super::conn::{Conn, Key, Phase};
use super::outq::{self, Kind};
use super::Shard;
use crate::config::{Config, SlowPolicy};
use crate::offset::Offset;

/// See `config::Tuning`.
const LOCAL_COPY_MEMBERS: usize = crate::config::TUNING.local_copy_members;

impl Shard {
    /// How long until the next flush may run (see `Intake::flush_due_in`).
    pub(super) fn flush_due_in(&self, now: Instant) -> Duration {
        self.intake.flush_due_in(now, self.config.flush_interval)
    }

    /// Takes a frame for every local subscriber of `channel`. Frames are collected per
    /// channel during the turn and fanned out together by `fan_out`. On a history
    /// channel (`offset`), a message already delivered is dropped, deliveries wait
    /// while the channel is being brought up to date, and subscribers being caught up
    /// get it held for them.
    pub(super) fn deliver(
        &mut self,
        channel: &str,
        frame: Bytes,
        kind: Kind,
        offset: Option<Offset>,
    ) {
        let Some(id) = self.subs.lookup(channel) else {
            return;
        };
        self.deliver_to(id, frame, kind, offset);
    }

    /// `deliver` to local channel `id`.
    pub(super) fn deliver_to(
        &mut self,
        id: ChanId,
        frame: Bytes,
        kind: Kind,
        offset: Option<Offset>,
    ) {
        let budget = self.intake_budget();
        let Some(ch) = self.subs.channel_mut(id) else {
            return;
        };
        if let Some(h) = ch.hist.as_deref_mut() {
            if !take_live(h, offset, &frame) {
                return;
            }
        }
        if ch.pending.is_empty() {
            self.batched.push((id, ch.name.clone()));
            ch.pending_bytes = 0;
            ch.pending_keep = false;
        }
        ch.pending_keep |= kind == Kind::Keep;
        ch.pending_bytes += frame.len();
        if ch.pending_bytes >= budget {
            self.intake.hold = true;
        }
        ch.pending.push(frame);
    }

    /// Queues this turn's frames of each channel to its subscribers. When a channel got
    /// several frames, they are joined once into one buffer that every subscriber shares
    /// (one copy per channel per turn, none per subscriber), so a hot channel costs each
    /// subscriber one queue entry and one iovec per turn instead of one per message.
    pub(super) fn fan_out(&mut self) {
        let limit = self.config.limits.outbound_limit;
        let budget = self.intake_budget();
        let mut hold = false;
        let mut queued = 0u64;
        // The per-turn vectors keep their capacity from turn to turn (taken, drained,
        // given back): no allocation per turn or per channel in the steady state.
        let mut batched = std::mem::take(&mut self.batched);
        for (id, name) in batched.drain(..) {
            let Some(ch) = self.subs.channel_mut(id) else {
                continue;
            };
            if !std::sync::Arc::ptr_eq(&ch.name, &name) {
                continue; // the channel was removed meanwhile
            }
            let mut frames = std::mem::take(&mut ch.pending);
            // A turn that carried a `gap` notice is never dropped: the notice is what
            // tells the client of a loss.
            let kind = if ch.pending_keep {
                Kind::Keep
            } else {
                Kind::Delivery
            };
            let count = frames.len() as u64;
            let members = ch.members.len();
            let frame = match frames.len() {
                0 => None,
                // The frame the router built is shared by every shard: a clone per member
                // would bounce its reference count's cache line between the shards' cores
                // once per delivery. Past a few members, one copy per shard is cheaper.
                // (`frames` stays whole: compression, below, reads it.)
                1 if self.config.shards > 1 && members >= LOCAL_COPY_MEMBERS => {
                    frames.first().map(|f| Bytes::copy_from_slice(f))
                }
                1 => frames.first().cloned(),
                _ => {
                    let total = frames.iter().map(Bytes::len).sum();
                    let mut joined = BytesMut::with_capacity(total);
                    for f in &frames {
                        joined.extend_from_slice(f);
                    }
                    Some(joined.freeze())
                }
            };
            let Some(frame) = frame else {
                ch.pending = frames;
                continue;
            };
            let Some(ch) = self.subs.channel(id) else {
                continue;
            };
            // The turn's frames compressed, once, for the first member that negotiated
            // permessage-deflate; shared by all of them like `frame` (see ws::deflate).
            let mut zipped: Option<crate::ws::deflate::Compressed> = None;
            let m = &self.metrics.shards[self.id.index()];
            for &member in &ch.members {
                let key = Key::from_raw(member);
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if !conn.session.is_open() {
                    continue;
                }
                let out = match conn.session.deflate() {
                    0 => &frame,
                    bits => {
                        let z = zipped.get_or_insert_with(|| {
                            let z = crate::ws::deflate::compress_frames(&frames);
                            m.compressed.fetch_add(z.messages as u64, Ordering::Relaxed);
                            z
                        });
                        // A message longer than the peer's window goes out plain.
                        if z.longest <= crate::ws::deflate::window(bits) {
                            &z.frame
                        } else {
                            &frame
                        }
                    }
                };
                conn.outq.push_kind(out.clone(), kind);
                conn.queued_since_flush = conn.queued_since_flush.saturating_add(out.len() as u32);
                if conn.queued_since_flush as usize >= budget {
                    hold = true;
                }
                queued += count;
                self.intake.messages_since_flush += count;
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(key);
                }
                if conn.outq.bytes() > limit {
                    Self::over_limit(conn, &self.metrics.shards[self.id.index()], &self.config);
                }
            }
            frames.clear();
            if let Some(ch) = self.subs.channel_mut(id) {
                ch.pending = frames;
            }
        }
        if self.batched.is_empty() {
            self.batched = batched;
        }
        self.intake.hold |= hold;
        self.metrics.shards[self.id.index()]
            .messages_out
            .fetch_add(queued, Ordering::Relaxed);
    }

    /// The slow-consumer policy, applied when a WebSocket's queue passes the limit.
    /// `close`: everything not yet started is dropped and close 4000 is queued after
    /// the rest of a partly written frame. `drop-oldest`: the oldest deliveries are
    /// dropped (never a reply, a control frame or a `gap`) and the client is told once;
    /// if what cannot be dropped still holds twice the limit (a client that sends
    /// pings or commands and never reads the answers), it is closed as under `close`.
    fn over_limit(conn: &mut Conn, m: &crate::metrics::ShardMetrics, config: &Config) {
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
    pub(super) fn queue(&mut self, key: Key, frame: Bytes) {
        let limit = self.config.limits.outbound_limit;
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
            Self::over_limit(conn, &self.metrics.shards[self.id.index()], &self.config);
        }
    }

    /// Queues a delivery (droppable by the slow-consumer policy) to one open WebSocket:
    /// a subscriber's own history replay.
    pub(super) fn queue_delivery(&mut self, key: Key, frame: Bytes) {
        let limit = self.config.limits.outbound_limit;
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
        self.metrics.shards[self.id.index()]
            .messages_out
            .fetch_add(1, Ordering::Relaxed);
        if conn.outq.bytes() > limit {
            Self::over_limit(conn, &self.metrics.shards[self.id.index()], &self.config);
        }
    }

    /// Queues a WebSocket close frame: the last frame this connection will ever get
    /// (RFC 6455 §5.5.1). The socket is dropped once it is written (or when the peer
    /// does not read it in time, see `tick`). A connection already closing is left as
    /// it is.
    pub(super) fn close_ws(&mut self, key: Key, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.close() {
            self.queue_close_frame(key, code, reason);
        }
    }

    /// Queues the close frame of a session that decided to close (its phase is
    /// already `Closing`: nothing else is queued after this frame).
    pub(super) fn queue_close_frame(&mut self, key: Key, code: u16, reason: &str) {
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
    pub(super) fn respond_http(&mut self, key: Key, mut response: Vec<u8>, keep_alive: bool) {
        let keep_alive = keep_alive && self.shutdown_deadline.is_none();
        let now = self.clock.coarse();
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

    pub(super) fn mark_dirty(&mut self, key: Key) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The end-of-turn flush: one vectored write (or a few) per touched connection.
    pub(super) fn flush_dirty(&mut self) {
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
                        self.intake.lag_ended(Some(Instant::now()));
                    }
                    match conn.phase() {
                        Phase::Closing => self.close(key),
                        // The peer closed its side: nothing more will be asked.
                        Phase::Handshake | Phase::HttpBody if conn.session.read_closed() => {
                            self.close(key)
                        }
                        // A keep-alive connection whose response is written: parse
                        // what it pipelined meanwhile.
                        Phase::Handshake if conn.session.has_input() => self.ingest(key, &mut []),
                        _ => {}
                    }
                }
                Ok((outq::Flushed::Blocked, n)) => {
                    bytes += n as u64;
                    conn.blocked = true;
                    self.intake.lag_seen(conn.lagging, n, Instant::now());
                    conn.lagging = true;
                }
                Err(_) => self.close(key),
            }
        }
        self.metrics.shards[self.id.index()]
            .bytes_out
            .fetch_add(bytes, Ordering::Relaxed);
        self.intake.flushed(writes);
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}
