//! `Fanout`, the shard's channel side: the subscription index (`SubIndex`), the channels
//! with frames waiting for this turn's fan-out, and the history reads in flight (history
//! channels: `history.rs`). It carries out subscribe and unsubscribe (asking the broker
//! only on a channel's first and last local subscriber, answering `subscribed` when the
//! broker confirms), takes deliveries during the turn and, once per turn, queues each
//! channel's frames to its members through `Wire` (one shared `Bytes` per channel, never
//! a copy per subscriber). It never reads or writes a socket and never removes a
//! connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::chan_history::{take_live, Reads};
use super::conn::Key;
use super::ctx::Ctx;
use super::history_query;
use super::intake::Intake;
use super::output::Wire;
use super::outq::Kind;
use super::subs::{Added, ChanId, Pos, SubIndex};
use crate::msg::BrokerCmd;
use crate::offset::Offset;
use crate::protocol::{reply, ErrorCode};

/// See `config::Tuning`.
const LOCAL_COPY_MEMBERS: usize = crate::config::TUNING.local_copy_members;

/// The shard's channels, their pending frames and history reads.
#[derive(Default)]
pub struct Fanout {
    pub subs: SubIndex,
    /// Channels with frames waiting for this turn's `fan_out` (id, name to check it).
    pub batched: Vec<(ChanId, Arc<str>)>,
    /// History reads to ask again, and read tags (see `chan_history::Reads`).
    pub reads: Reads,
}

impl Fanout {
    /// Takes a frame for every local subscriber of `channel`. Frames are collected per
    /// channel during the turn and fanned out together by `fan_out`. On a history
    /// channel (`offset`), a message already delivered is dropped, deliveries wait
    /// while the channel is being brought up to date, and subscribers being caught up
    /// get it held for them.
    pub fn deliver(
        &mut self,
        ctx: &Ctx,
        intake: &mut Intake,
        channel: &str,
        frame: Bytes,
        kind: Kind,
        offset: Option<Offset>,
    ) {
        let Some(id) = self.subs.lookup(channel) else {
            return;
        };
        self.deliver_to(ctx, intake, id, frame, kind, offset);
    }

    /// `deliver` to local channel `id`.
    pub fn deliver_to(
        &mut self,
        ctx: &Ctx,
        intake: &mut Intake,
        id: ChanId,
        frame: Bytes,
        kind: Kind,
        offset: Option<Offset>,
    ) {
        let budget = Intake::budget(&ctx.config);
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
            intake.hold = true;
        }
        ch.pending.push(frame);
    }

    /// Queues this turn's frames of each channel to its subscribers. When a channel got
    /// several frames, they are joined once into one buffer that every subscriber shares
    /// (one copy per channel per turn, none per subscriber), so a hot channel costs each
    /// subscriber one queue entry and one iovec per turn instead of one per message.
    pub fn fan_out(&mut self, ctx: &Ctx, wire: &mut Wire, intake: &mut Intake) {
        let limit = ctx.config.limits.outbound_limit;
        let budget = Intake::budget(&ctx.config);
        let mut hold = false;
        let mut queued = 0u64;
        // The per-turn vectors keep their capacity from turn to turn (taken, drained,
        // given back): no allocation per turn or per channel in the steady state.
        let mut batched = std::mem::take(&mut self.batched);
        for (id, name) in batched.drain(..) {
            let Some(ch) = self.subs.channel_mut(id) else {
                continue;
            };
            if !Arc::ptr_eq(&ch.name, &name) {
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
                1 if ctx.config.shards > 1 && members >= LOCAL_COPY_MEMBERS => {
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
            for &member in &ch.members {
                let key = member;
                let Some(conn) = wire.conns.get_mut(key) else {
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
                            let n = z.messages as u64;
                            ctx.m().compressed.fetch_add(n, Ordering::Relaxed);
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
                intake.messages_since_flush += count;
                if !conn.dirty {
                    conn.dirty = true;
                    wire.dirty.push(key);
                }
                if conn.outq.bytes() > limit {
                    Wire::over_limit(conn, ctx.m(), &ctx.config);
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
        intake.hold |= hold;
        ctx.m().messages_out.fetch_add(queued, Ordering::Relaxed);
    }

    /// Takes member `pos` out of local channel `chan`, fixing the position of the member
    /// moved into its place, and tells the broker when the channel empties.
    pub fn leave(&mut self, ctx: &Ctx, wire: &mut Wire, chan: ChanId, pos: Pos) {
        let removed = self.subs.remove(chan, pos);
        if let Some((moved_key, new_pos)) = removed.moved {
            if let Some(c) = wire.conns.get_mut(moved_key) {
                if let Some(i) = c.sub_index(chan) {
                    c.subs[i].1 = new_pos;
                }
            }
        }
        if let Some(channel) = removed.emptied {
            self.unsubscribe_broker(ctx, channel);
        }
    }

    /// Tells the broker that this shard's last subscriber of `channel` left. An
    /// unsubscribe must never be lost (Redis would keep sending the channel to this node
    /// forever): when the broker queue is full it is owed, and retried every turn.
    pub fn unsubscribe_broker(&mut self, ctx: &Ctx, channel: Arc<str>) {
        let cmd = BrokerCmd::Unsubscribe {
            channel,
            shard: ctx.id,
        };
        if let Err(BrokerCmd::Unsubscribe { channel, .. }) = ctx.broker.send(cmd) {
            tracing::debug!(
                shard = ctx.id.index(),
                "broker queue full: unsubscribe owed"
            );
            self.subs.unsubscribe_owed.push(channel);
        }
    }

    /// Retries the unsubscribes the broker could not take (nothing in the common case).
    pub fn retry_unsubscribes(&mut self, ctx: &Ctx) {
        if self.subs.unsubscribe_owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.subs.unsubscribe_owed);
        let mut owed = owed.into_iter();
        for channel in owed.by_ref() {
            let cmd = BrokerCmd::Unsubscribe {
                channel,
                shard: ctx.id,
            };
            if let Err(BrokerCmd::Unsubscribe { channel, .. }) = ctx.broker.send(cmd) {
                // Still full: keep this one and the rest, in order, for the next turn.
                self.subs.unsubscribe_owed.push(channel);
                break;
            }
        }
        self.subs.unsubscribe_owed.extend(owed);
    }

    /// `subscribe`: joins (or waits for) local channel `channel`, asking the broker on
    /// its first local subscriber; history channels answer with their offset.
    pub fn subscribe(
        &mut self,
        ctx: &Ctx,
        wire: &mut Wire,
        key: Key,
        channel: &str,
        since: Option<Offset>,
    ) {
        let history = ctx.has_history(channel);
        if since.is_some() && !history {
            return wire.simple_error(
                ctx,
                key,
                ErrorCode::BadRequest,
                "this channel keeps no history: since is not allowed",
                None,
                Some(channel),
            );
        }
        let Some(conn) = wire.conns.get(key) else {
            return;
        };
        if let Some(chan) = self.subs.lookup(channel) {
            if let Some(i) = conn.sub_index(chan) {
                // Already subscribed: answer again if it was confirmed; a connection
                // still waiting gets its one `subscribed` when the broker confirms
                // (never one per repeat: the waiter list stays bounded).
                if !conn.subs[i].1.is_waiting() {
                    let last = self
                        .subs
                        .channel(chan)
                        .and_then(|c| c.hist.as_ref())
                        .and_then(|h| h.last);
                    let frame = match last {
                        Some(last) => reply::subscribed_at(channel, &last),
                        None => reply::subscribed(channel),
                    };
                    wire.queue(ctx, key, frame);
                }
                return;
            }
        }
        if conn.subs.len() >= ctx.config.limits.max_subscriptions {
            wire.simple_error(
                ctx,
                key,
                ErrorCode::BadRequest,
                "subscription limit reached",
                None,
                Some(channel),
            );
            return;
        }
        if since.is_some() && !history_query::allowed(ctx, wire, key, channel, None) {
            return;
        }
        let (chan, pos, added) = self.subs.add(channel, key, history, since);
        if let Some(conn) = wire.conns.get_mut(key) {
            conn.subs.push((chan, pos));
        }
        ctx.m().subscriptions.fetch_add(1, Ordering::Relaxed);
        match added {
            Added::Live if history => {
                let name = self.subs.channel(chan).map(|c| c.name.clone());
                if let Some(name) = name {
                    self.joined(ctx, wire, key, chan, &name, since);
                }
            }
            Added::Live => wire.queue(ctx, key, reply::subscribed(channel)),
            Added::Pending => {}
            Added::NewChannel(epoch) => {
                let Some(ch) = self.subs.channel(chan) else {
                    return;
                };
                let cmd = BrokerCmd::Subscribe {
                    channel: ch.name.clone(),
                    shard: ctx.id,
                    epoch,
                };
                if ctx.broker.send(cmd).is_err() {
                    // The broker cannot take it: undo, so a later subscribe tries again.
                    self.drop_subscription(ctx, wire, key, chan);
                    wire.simple_error(
                        ctx,
                        key,
                        ErrorCode::Unavailable,
                        "broker is busy, try again",
                        None,
                        Some(channel),
                    );
                }
            }
        }
    }

    fn drop_subscription(&mut self, ctx: &Ctx, wire: &mut Wire, key: Key, chan: ChanId) {
        let Some(conn) = wire.conns.get_mut(key) else {
            return;
        };
        let Some(i) = conn.sub_index(chan) else {
            return;
        };
        let (_, pos) = conn.subs.swap_remove(i);
        ctx.m().subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.leave(ctx, wire, chan, pos);
    }

    /// `unsubscribe`: leaves `channel` (if subscribed); always answered.
    pub fn unsubscribe(&mut self, ctx: &Ctx, wire: &mut Wire, key: Key, channel: &str) {
        if let Some(chan) = self.subs.lookup(channel) {
            self.drop_subscription(ctx, wire, key, chan);
        }
        wire.queue(ctx, key, reply::unsubscribed(channel));
    }

    /// The broker confirmed channel `channel` for the subscribe sent with `epoch`.
    pub fn on_subscribed(&mut self, ctx: &Ctx, wire: &mut Wire, channel: &str, epoch: u32) {
        let Some(chan) = self.subs.lookup(channel) else {
            return;
        };
        let Some(ch) = self.subs.channel_mut(chan) else {
            return;
        };
        if ch.epoch != epoch {
            return; // a confirmation of an earlier, since abandoned subscribe
        }
        if ch.hist.is_some() {
            // A history channel answers its subscribers with its offset: the first
            // time, only once it has read it.
            if ch.unsynced() {
                let syncing = ch.hist.as_ref().is_some_and(|h| h.syncing != 0);
                self.subs.set_live(chan);
                if !syncing {
                    self.start_sync(ctx, chan);
                }
            } else {
                self.admit_waiters(ctx, wire, chan);
            }
            return;
        }
        // Waiters become members (deliveries start now) and are told `subscribed`, in
        // that order on their queue: nothing of this channel reaches them before it.
        let (waiters, first) = self.subs.confirm(chan);
        if waiters.is_empty() {
            return;
        }
        let frame = reply::subscribed(channel);
        for (n, &key) in waiters.iter().enumerate() {
            if let Some(c) = wire.conns.get_mut(key) {
                if let Some(i) = c.sub_index(chan) {
                    c.subs[i].1 = Pos::member(first + n);
                }
            }
            wire.queue(ctx, key, frame.clone());
        }
    }
}
