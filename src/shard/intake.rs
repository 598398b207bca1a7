//! A shard's intake: draining its inbox (control messages first, then deliveries) and
//! the back-pressure that decides how much to take — nothing while most connections lag
//! (`intake_stalled`), and no more than a quarter of the outbound limit per connection
//! between two flushes (`intake_budget`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Shard, INBOX_BATCH, MAX_STALL};
use crate::broker::ShardMsg;

impl Shard {
    /// Takes what other threads sent: every control message, then deliveries up to the
    /// turn's budget (none while intake is paused or held), fanned out together.
    pub(super) fn drain_inbox(&mut self) {
        while let Some(msg) = self.control.try_recv() {
            self.on_msg(msg);
        }
        self.retry_unsubscribes();
        let budget = if self.intake_stalled(Instant::now()) {
            0
        } else {
            INBOX_BATCH
        };
        if self.dirty.is_empty() {
            self.hold_intake = false; // everything taken so far has been written
        }
        for _ in 0..budget {
            if self.hold_intake {
                break;
            }
            match self.data.try_recv() {
                Some(msg) => self.on_msg(msg),
                None => break,
            }
        }
        self.fan_out();
        self.metrics.shards[self.id]
            .queue_depth
            .store(self.data.len() as u64, Ordering::Relaxed);
    }

    /// Back-pressure from the sockets: while many connections are lagging (output left
    /// over after their last write: kernel buffers full), taking more deliveries would
    /// only grow every queue until the slow-consumer policy closed them all. Intake
    /// pauses instead, the shard queue fills and the router drops, counts and owes
    /// `gap`s: fanout then runs at the pace its clients read, like a single-threaded
    /// server would. The pause holds only while lagging connections make progress: if
    /// none has written a byte for `MAX_STALL`, they are stuck, intake resumes and the
    /// slow-consumer policy deals with them.
    pub(super) fn intake_stalled(&mut self, now: Instant) -> bool {
        let open = self.conns.len();
        // A few slow clients never pause anyone (they meet the slow-consumer policy);
        // an eighth of the shard, and at least 32 connections, lagging is the client
        // side as a whole not keeping up.
        if self.lagging < 32 || self.lagging * 8 <= open {
            return false;
        }
        now.saturating_duration_since(self.lag_progress) < MAX_STALL
    }

    fn on_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver { channel, frame, at } => {
                self.deliver(&channel, frame);
                self.metrics.shards[self.id]
                    .deliver_latency
                    .observe(at.elapsed());
            }
            ShardMsg::Subscribed { channel, epoch } => self.on_subscribed(&channel, epoch),
            ShardMsg::Unconfirmed => self.on_unconfirmed(),
            ShardMsg::Gap { channel } => {
                let frame = crate::protocol::reply::gap(&channel);
                self.deliver(&channel, frame);
            }
            ShardMsg::Published { conn, id, result } => self.on_published(conn, &id, result),
            ShardMsg::Reply {
                conn,
                frame,
                close_after,
            } => self.on_reply(conn, frame, close_after),
            ShardMsg::Accept(stream) => self.register(stream),
            ShardMsg::Shutdown => self.begin_shutdown(),
        }
    }

    /// Every frame taken may be queued to all of a channel's subscribers, so between two
    /// flushes (several turns when flushes are paced) no connection is handed more than a
    /// quarter of the outbound limit: the flush sees it lagging (and intake pauses, see
    /// `intake_stalled`) before the shard alone has pushed it past the limit. Measured per
    /// connection, not per shard, so many channels at high rates are not capped together.
    pub(super) fn intake_budget(&self) -> usize {
        (self.config.limits.outbound_limit / 4).max(1)
    }
}
