//! History channels on a shard: no message twice and none missing, for the shard as a
//! whole and for each subscriber that resumes.
//!
//! - A channel's first read (`sync`, when it becomes live) gives its current offset;
//!   the channel's subscribers wait for it, so `subscribed` always carries an offset.
//! - A `gap` from the broker (Redis resubscribed, a full queue) on a channel whose
//!   offset is known becomes a repair: deliveries are held, history after the last
//!   delivered offset is read and delivered, then the held deliveries not already in
//!   it. Clients see `gap` only for what history no longer has.
//! - A subscriber with `since` joins at the channel's offset O and is caught up alone:
//!   (since, O] is read for it while what arrives after O is held for it, then it
//!   becomes a member like any other. The hand-over is exact because every read is
//!   bounded by an offset the shard already holds.
//!
//! Every check is per channel or per resuming subscriber, never per member and
//! delivery; a failed read is retried once a second, and held frames are bounded
//! (past `max_held` they are dropped and read again from history).

use super::subs::{ChanId, Pos};
use std::sync::Arc;

use super::chan_history::{Catch, RETRY};
use super::conn::ConnId;
use super::conn::Key;
use super::ctx::Ctx;
use super::fanout::Fanout;
use super::intake::Intake;
use super::output::Wire;
use super::outq::Kind;
use crate::broker::history::MAX_REPLAY;
use crate::msg::{HistoryRead, HistoryTo, Replay};
use crate::offset::Offset;
use crate::protocol::reply;

impl Fanout {
    /// Reads local channel `id` up to date: its first offset, or what it missed since
    /// its last delivered one. Deliveries are held until the answer.
    pub fn start_sync(&mut self, ctx: &Ctx, id: ChanId) {
        let tag = self.reads.next_tag();
        let Some(ch) = self.subs.channel_mut(id) else {
            return;
        };
        let Some(h) = ch.hist.as_deref_mut() else {
            return;
        };
        h.syncing = tag;
        h.again = false;
        let since = h.last;
        let read = HistoryRead {
            channel: ch.name.clone(),
            since,
            upto: None,
            limit: if since.is_some() { MAX_REPLAY } else { 0 },
            to: HistoryTo::Sync { shard: ctx.id, tag },
        };
        let name = ch.name.clone();
        if !ctx.ask(read) {
            if let Some(h) = self
                .subs
                .channel_mut(id)
                .and_then(|c| c.hist.as_deref_mut())
            {
                // The broker cannot take it now: keep holding, ask again in a second.
                h.syncing = RETRY;
            }
            self.reads.retry.push(name);
        }
    }

    /// A `gap` from the broker on `channel`: repaired from history when the channel has
    /// an offset to repair from. False: not a history channel (send the gap).
    pub fn repair(&mut self, ctx: &Ctx, channel: &str) -> bool {
        let Some(id) = self.subs.lookup(channel) else {
            return true; // nobody here to tell
        };
        let Some(h) = self
            .subs
            .channel_mut(id)
            .and_then(|c| c.hist.as_deref_mut())
        else {
            return false;
        };
        if h.last.is_none() {
            // The first read is in flight (or owed): it reads everything there is.
            h.again |= h.syncing != 0;
            return true;
        }
        if h.syncing != 0 {
            h.again = true;
        } else {
            self.start_sync(ctx, id);
        }
        ctx.metrics
            .history_repairs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// The answer to a sync read.
    pub fn on_synced(
        &mut self,
        ctx: &Ctx,
        wire: &mut Wire,
        intake: &mut Intake,
        channel: &str,
        answer: (u32, Result<Replay, ()>),
    ) {
        let (tag, replay) = answer;
        let Some(id) = self.subs.lookup(channel) else {
            return;
        };
        let Some(ch) = self.subs.channel_mut(id) else {
            return;
        };
        let name = ch.name.clone();
        let Some(h) = ch.hist.as_deref_mut() else {
            return;
        };
        if h.syncing != tag {
            return; // a stale answer
        }
        let Ok(replay) = replay else {
            // Redis could not answer: keep holding, ask again in a second.
            h.syncing = RETRY;
            self.reads.retry.push(name);
            return;
        };
        h.syncing = 0;
        // Taken now: what this answer brings must be delivered, not held for the next.
        let again = std::mem::take(&mut h.again);
        let first = h.last.is_none();
        if first {
            h.last = Some(replay.top);
        }
        let held = std::mem::take(&mut h.held);
        h.held_bytes = 0;
        let lost = std::mem::take(&mut h.held_lost);
        // Waiters join at the offset the shard had before this answer, so what the
        // answer brings reaches them exactly once.
        if self.subs.channel(id).is_some_and(|c| c.live) {
            self.admit_waiters(ctx, wire, id);
        }
        if replay.gap || lost {
            ctx.metrics
                .history_gaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.deliver_to(ctx, intake, id, reply::gap(channel), Kind::Keep, None);
        }
        for (offset, frame) in replay.frames {
            self.deliver_to(ctx, intake, id, frame, Kind::Delivery, Some(offset));
        }
        if let Some(h) = self
            .subs
            .channel_mut(id)
            .and_then(|c| c.hist.as_deref_mut())
        {
            // The channel is at least at the answer's offset (a new epoch replaces it).
            let top = replay.top;
            match h.last {
                Some(last) if top.covered_by(&last) => {}
                Some(last) if last.epoch == top.epoch || top.epoch != 0 => h.last = Some(top),
                Some(_) => {}
                None => h.last = Some(top),
            }
        }
        for (offset, frame) in held {
            self.deliver_to(ctx, intake, id, frame, Kind::Delivery, offset);
        }
        if again {
            self.start_sync(ctx, id);
        }
    }

    /// Waiters of live, synced channel `id` become members (told `subscribed` with the
    /// channel's offset); those that asked to resume from elsewhere are caught up.
    pub fn admit_waiters(&mut self, ctx: &Ctx, wire: &mut Wire, id: ChanId) {
        let (waiters, first) = self.subs.confirm(id);
        let Some(ch) = self.subs.channel(id) else {
            return;
        };
        let name = ch.name.clone();
        for (n, &key) in waiters.iter().enumerate() {
            if let Some(c) = wire.conns.get_mut(key) {
                if let Some(i) = c.sub_index(id) {
                    c.subs[i].1 = Pos::member(first + n);
                }
            }
        }
        let mut resume = match self
            .subs
            .channel_mut(id)
            .and_then(|c| c.hist.as_deref_mut())
        {
            Some(h) => std::mem::take(&mut h.resume),
            None => Vec::new(),
        };
        for &key in &waiters {
            let since = resume
                .iter()
                .position(|&(k, _)| k == key)
                .map(|i| resume.swap_remove(i).1);
            self.joined(ctx, wire, key, id, &name, since);
        }
    }

    /// Connection `key` is a member of history channel `id`: it is told `subscribed`
    /// with the channel's offset, and caught up if it resumes from another one.
    pub fn joined(
        &mut self,
        ctx: &Ctx,
        wire: &mut Wire,
        key: Key,
        id: ChanId,
        name: &str,
        since: Option<Offset>,
    ) {
        let Some(last) = self
            .subs
            .channel(id)
            .and_then(|c| c.hist.as_ref())
            .and_then(|h| h.last)
        else {
            return;
        };
        wire.queue(ctx, key, reply::subscribed_at(name, &last));
        let Some(since) = since.filter(|s| *s != last) else {
            return;
        };
        let Some(conn) = wire.conns.get(key) else {
            return;
        };
        let gen = conn.gen;
        let Some(i) = conn.sub_index(id) else {
            return;
        };
        let pos = conn.subs[i].1;
        let tag = self.reads.next_tag();
        let catch = Catch {
            key,
            tag,
            since,
            upto: last,
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
        };
        let Some((new_pos, moved)) = self.subs.start_catch(id, pos, catch) else {
            return;
        };
        wire.set_pos(key, id, new_pos);
        if let Some((k, p)) = moved {
            wire.set_pos(k, id, p);
        }
        let conn = ConnId {
            key: key.raw(),
            gen,
        };
        self.ask_catch(ctx, id, conn, tag, (since, last));
    }

    /// Asks the catch-up read of `conn` on channel `id`: (`since`, `upto`].
    fn ask_catch(&mut self, ctx: &Ctx, id: ChanId, conn: ConnId, tag: u32, span: (Offset, Offset)) {
        let (since, upto) = span;
        let Some(ch) = self.subs.channel(id) else {
            return;
        };
        let channel: Arc<str> = ch.name.clone();
        let read = HistoryRead {
            channel: channel.clone(),
            since: Some(since),
            upto: Some(upto.id),
            limit: MAX_REPLAY,
            to: HistoryTo::Catch {
                shard: ctx.id,
                conn,
                tag,
            },
        };
        if !ctx.ask(read) {
            self.reads.catch_retry.push((channel, Key::of(conn), tag));
        }
    }

    /// The answer to a subscriber's catch-up read: `gap` if history lost something,
    /// the replay, then what was held for it; then it is a member.
    pub fn on_caught(
        &mut self,
        ctx: &Ctx,
        wire: &mut Wire,
        channel: &str,
        conn: ConnId,
        answer: (u32, Result<Replay, ()>),
    ) {
        let (tag, replay) = answer;
        let key = Key::of(conn);
        if wire.conns.get(key).is_none_or(|c| c.gen != conn.gen) {
            return;
        }
        let Some(id) = self.subs.lookup(channel) else {
            return;
        };
        let state = self
            .subs
            .channel(id)
            .and_then(|c| c.hist.as_ref())
            .and_then(|h| {
                let c = h.catching.iter().find(|c| c.key == key && c.tag == tag)?;
                Some((c.overflowed, c.since, c.upto, h.last))
            });
        let Some((overflowed, since, upto, last)) = state else {
            return; // unsubscribed meanwhile, or a stale answer
        };
        let Ok(replay) = replay else {
            // Ask again in a second; what arrives meanwhile is held for it.
            self.reads.catch_retry.push((Arc::from(channel), key, tag));
            return;
        };
        if overflowed {
            // Its held frames were dropped: deliver this part, then read on from
            // `upto` to where the channel is now.
            let new_tag = self.reads.next_tag();
            let now = last.unwrap_or(upto);
            if let Some(c) = self
                .subs
                .channel_mut(id)
                .and_then(|c| c.hist.as_deref_mut())
                .and_then(|h| h.catching.iter_mut().find(|c| c.key == key && c.tag == tag))
            {
                c.tag = new_tag;
                c.since = upto;
                c.upto = now;
                c.overflowed = false;
                c.held = Vec::new();
                c.held_bytes = 0;
            }
            Self::replay_to(ctx, wire, key, channel, &replay, since);
            self.ask_catch(ctx, id, conn, new_tag, (upto, now));
            return;
        }
        let Some((catch, pos, moved)) = self.subs.end_catch(id, key, tag) else {
            return;
        };
        wire.set_pos(key, id, pos);
        if let Some((k, p)) = moved {
            wire.set_pos(k, id, p);
        }
        Self::replay_to(ctx, wire, key, channel, &replay, since);
        for (offset, frame) in catch.held {
            if offset.is_some_and(|o| o.covered_by(&since) || o.covered_by(&upto)) {
                continue;
            }
            wire.queue_delivery(ctx, key, frame);
        }
    }

    /// Queues a replay to one subscriber: `gap` first if history lost something, then
    /// every message after `since`.
    fn replay_to(
        ctx: &Ctx,
        wire: &mut Wire,
        key: Key,
        channel: &str,
        replay: &Replay,
        since: Offset,
    ) {
        if replay.gap {
            ctx.metrics
                .history_gaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            wire.queue(ctx, key, reply::gap(channel));
        }
        for (offset, frame) in &replay.frames {
            if offset.covered_by(&since) {
                continue;
            }
            wire.queue_delivery(ctx, key, frame.clone());
        }
    }

    /// Once a second: reads that could not be asked, or that Redis could not answer,
    /// are asked again.
    pub fn retry_history(&mut self, ctx: &Ctx, wire: &Wire) {
        for name in std::mem::take(&mut self.reads.retry) {
            let Some(id) = self.subs.lookup(&name) else {
                continue;
            };
            let pending = self
                .subs
                .channel(id)
                .and_then(|c| c.hist.as_ref())
                .is_some_and(|h| h.syncing == RETRY || (h.syncing == 0 && h.last.is_none()));
            if pending && self.subs.channel(id).is_some_and(|c| c.live) {
                self.start_sync(ctx, id);
            } else if pending {
                self.reads.retry.push(name);
            }
        }
        for (name, key, tag) in std::mem::take(&mut self.reads.catch_retry) {
            let Some(id) = self.subs.lookup(&name) else {
                continue;
            };
            let found = self
                .subs
                .channel(id)
                .and_then(|c| c.hist.as_ref())
                .and_then(|h| h.catching.iter().find(|c| c.key == key && c.tag == tag))
                .map(|c| (c.since, c.upto));
            let Some((since, upto)) = found else {
                continue;
            };
            let Some(gen) = wire.conns.get(key).map(|c| c.gen) else {
                continue;
            };
            let conn = ConnId {
                key: key.raw(),
                gen,
            };
            self.ask_catch(ctx, id, conn, tag, (since, upto));
        }
    }
}
