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
use super::outq::Kind;
use super::Shard;
use crate::broker::history::MAX_REPLAY;
use crate::msg::{BrokerCmd, HistoryRead, HistoryTo, Replay};
use crate::offset::Offset;
use crate::protocol::reply;

impl Shard {
    /// Whether `channel` keeps history (its namespace's `history_size`).
    pub(super) fn has_history(&self, channel: &str) -> bool {
        self.ctx.config.namespaces.lookup(channel).history_size > 0
    }

    /// The id of connection `key` (with its generation) as other threads name it.
    pub(super) fn conn_id(&self, key: Key) -> Option<ConnId> {
        let gen = self.wire.conns.get(key)?.gen;
        Some(ConnId {
            key: key.raw(),
            gen,
        })
    }

    /// Asks for a read; false if the broker cannot take it now.
    pub(super) fn ask(&mut self, read: HistoryRead) -> bool {
        self.ctx
            .broker
            .send(BrokerCmd::History(Box::new(read)))
            .is_ok()
    }

    /// Reads local channel `id` up to date: its first offset, or what it missed since
    /// its last delivered one. Deliveries are held until the answer.
    pub(super) fn start_sync(&mut self, id: ChanId) {
        let tag = self.fan.reads.next_tag();
        let Some(ch) = self.fan.subs.channel_mut(id) else {
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
            to: HistoryTo::Sync {
                shard: self.ctx.id,
                tag,
            },
        };
        let name = ch.name.clone();
        if !self.ask(read) {
            if let Some(h) = self
                .fan
                .subs
                .channel_mut(id)
                .and_then(|c| c.hist.as_deref_mut())
            {
                // The broker cannot take it now: keep holding, ask again in a second.
                h.syncing = RETRY;
            }
            self.fan.reads.retry.push(name);
        }
    }

    /// A `gap` from the broker on `channel`: repaired from history when the channel has
    /// an offset to repair from. False: not a history channel (send the gap).
    pub(super) fn repair(&mut self, channel: &str) -> bool {
        let Some(id) = self.fan.subs.lookup(channel) else {
            return true; // nobody here to tell
        };
        let Some(h) = self
            .fan
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
            self.start_sync(id);
        }
        self.ctx
            .metrics
            .history_repairs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// The answer to a sync read.
    pub(super) fn on_synced(&mut self, channel: &str, tag: u32, replay: Result<Replay, ()>) {
        let Some(id) = self.fan.subs.lookup(channel) else {
            return;
        };
        let Some(ch) = self.fan.subs.channel_mut(id) else {
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
            self.fan.reads.retry.push(name);
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
        if self.fan.subs.channel(id).is_some_and(|c| c.live) {
            self.admit_waiters(id);
        }
        if replay.gap || lost {
            self.ctx
                .metrics
                .history_gaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.fan.deliver_to(
                &self.ctx,
                &mut self.intake,
                id,
                reply::gap(channel),
                Kind::Keep,
                None,
            );
        }
        for (offset, frame) in replay.frames {
            self.fan.deliver_to(
                &self.ctx,
                &mut self.intake,
                id,
                frame,
                Kind::Delivery,
                Some(offset),
            );
        }
        if let Some(h) = self
            .fan
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
            self.fan.deliver_to(
                &self.ctx,
                &mut self.intake,
                id,
                frame,
                Kind::Delivery,
                offset,
            );
        }
        if again {
            self.start_sync(id);
        }
    }

    /// Waiters of live, synced channel `id` become members (told `subscribed` with the
    /// channel's offset); those that asked to resume from elsewhere are caught up.
    pub(super) fn admit_waiters(&mut self, id: ChanId) {
        let (waiters, first) = self.fan.subs.confirm(id);
        let Some(ch) = self.fan.subs.channel(id) else {
            return;
        };
        let name = ch.name.clone();
        for (n, &key) in waiters.iter().enumerate() {
            if let Some(c) = self.wire.conns.get_mut(Key::from_raw(key)) {
                if let Some(i) = c.sub_index(id) {
                    c.subs[i].1 = Pos::member(first + n);
                }
            }
        }
        let mut resume = match self
            .fan
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
            self.joined(Key::from_raw(key), id, &name, since);
        }
    }

    /// Connection `key` is a member of history channel `id`: it is told `subscribed`
    /// with the channel's offset, and caught up if it resumes from another one.
    pub(super) fn joined(&mut self, key: Key, id: ChanId, name: &str, since: Option<Offset>) {
        let Some(last) = self
            .fan
            .subs
            .channel(id)
            .and_then(|c| c.hist.as_ref())
            .and_then(|h| h.last)
        else {
            return;
        };
        self.wire
            .queue(&self.ctx, key, reply::subscribed_at(name, &last));
        let Some(since) = since.filter(|s| *s != last) else {
            return;
        };
        let Some(conn) = self.wire.conns.get(key) else {
            return;
        };
        let gen = conn.gen;
        let Some(i) = conn.sub_index(id) else {
            return;
        };
        let pos = conn.subs[i].1;
        let tag = self.fan.reads.next_tag();
        let catch = Catch {
            key: key.raw(),
            tag,
            since,
            upto: last,
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
        };
        let Some((new_pos, moved)) = self.fan.subs.start_catch(id, pos, catch) else {
            return;
        };
        self.set_pos(key.raw(), id, new_pos);
        if let Some((k, p)) = moved {
            self.set_pos(k, id, p);
        }
        self.ask_catch(id, key.raw(), gen, tag, since, last);
    }

    fn ask_catch(&mut self, id: ChanId, key: u32, gen: u32, tag: u32, since: Offset, upto: Offset) {
        let Some(ch) = self.fan.subs.channel(id) else {
            return;
        };
        let channel: Arc<str> = ch.name.clone();
        let read = HistoryRead {
            channel: channel.clone(),
            since: Some(since),
            upto: Some(upto.id),
            limit: MAX_REPLAY,
            to: HistoryTo::Catch {
                shard: self.ctx.id,
                conn: ConnId { key, gen },
                tag,
            },
        };
        if !self.ask(read) {
            self.fan.reads.catch_retry.push((channel, key, tag));
        }
    }

    fn set_pos(&mut self, key: u32, id: ChanId, pos: Pos) {
        if let Some(c) = self.wire.conns.get_mut(Key::from_raw(key)) {
            if let Some(i) = c.sub_index(id) {
                c.subs[i].1 = pos;
            }
        }
    }

    /// The answer to a subscriber's catch-up read: `gap` if history lost something,
    /// the replay, then what was held for it; then it is a member.
    pub(super) fn on_caught(
        &mut self,
        channel: &str,
        conn: ConnId,
        tag: u32,
        replay: Result<Replay, ()>,
    ) {
        let key = conn.key;
        if self
            .wire
            .conns
            .get(Key::from_raw(key))
            .is_none_or(|c| c.gen != conn.gen)
        {
            return;
        }
        let Some(id) = self.fan.subs.lookup(channel) else {
            return;
        };
        let state = self
            .fan
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
            self.fan
                .reads
                .catch_retry
                .push((Arc::from(channel), key, tag));
            return;
        };
        if overflowed {
            // Its held frames were dropped: deliver this part, then read on from
            // `upto` to where the channel is now.
            let new_tag = self.fan.reads.next_tag();
            let now = last.unwrap_or(upto);
            if let Some(c) = self
                .fan
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
            self.replay_to(Key::from_raw(key), channel, &replay, since);
            self.ask_catch(id, key, conn.gen, new_tag, upto, now);
            return;
        }
        let Some((catch, pos, moved)) = self.fan.subs.end_catch(id, key, tag) else {
            return;
        };
        self.set_pos(key, id, pos);
        if let Some((k, p)) = moved {
            self.set_pos(k, id, p);
        }
        self.replay_to(Key::from_raw(key), channel, &replay, since);
        for (offset, frame) in catch.held {
            if offset.is_some_and(|o| o.covered_by(&since) || o.covered_by(&upto)) {
                continue;
            }
            self.wire
                .queue_delivery(&self.ctx, Key::from_raw(key), frame);
        }
    }

    /// Queues a replay to one subscriber: `gap` first if history lost something, then
    /// every message after `since`.
    fn replay_to(&mut self, key: Key, channel: &str, replay: &Replay, since: Offset) {
        if replay.gap {
            self.ctx
                .metrics
                .history_gaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.wire.queue(&self.ctx, key, reply::gap(channel));
        }
        for (offset, frame) in &replay.frames {
            if offset.covered_by(&since) {
                continue;
            }
            self.wire.queue_delivery(&self.ctx, key, frame.clone());
        }
    }

    /// Once a second: reads that could not be asked, or that Redis could not answer,
    /// are asked again.
    pub(super) fn retry_history(&mut self) {
        for name in std::mem::take(&mut self.fan.reads.retry) {
            let Some(id) = self.fan.subs.lookup(&name) else {
                continue;
            };
            let pending = self
                .fan
                .subs
                .channel(id)
                .and_then(|c| c.hist.as_ref())
                .is_some_and(|h| h.syncing == RETRY || (h.syncing == 0 && h.last.is_none()));
            if pending && self.fan.subs.channel(id).is_some_and(|c| c.live) {
                self.start_sync(id);
            } else if pending {
                self.fan.reads.retry.push(name);
            }
        }
        for (name, key, tag) in std::mem::take(&mut self.fan.reads.catch_retry) {
            let Some(id) = self.fan.subs.lookup(&name) else {
                continue;
            };
            let found = self
                .fan
                .subs
                .channel(id)
                .and_then(|c| c.hist.as_ref())
                .and_then(|h| h.catching.iter().find(|c| c.key == key && c.tag == tag))
                .map(|c| (c.since, c.upto));
            let Some((since, upto)) = found else {
                continue;
            };
            let Some(gen) = self.wire.conns.get(Key::from_raw(key)).map(|c| c.gen) else {
                continue;
            };
            self.ask_catch(id, key, gen, tag, since, upto);
        }
    }
}
