//! The node-wide routing table: channel → the set of shards with local subscribers, and
//! the state of the broker subscription (reference counted per shard, confirmed per
//! epoch). The dispatch of one frame to those shards is `dispatch.rs`. Owned by exactly
//! one broker thread; no locks. The router keeps state, not links: every message it
//! sends goes through the `Outbox` it is handed per call (the shards' queues in the
//! node, a recorder in the unit tests).

mod dispatch;
#[cfg(test)]
mod tests;

use crate::hash::FastMap;
use std::sync::Arc;

use super::{ShardId, ShardLinks, ShardMsg};
use crate::metrics::Metrics;
use crate::protocol::envelope::EnvelopeBuilder;

/// Where the router's messages go.
pub trait Outbox {
    /// Number of shards.
    fn shards(&self) -> usize;
    /// Shard `shard`'s data queue has no room.
    fn is_full(&self, shard: ShardId) -> bool;
    /// Queues on the bounded data queue without waking; gives the message back when
    /// the queue is full.
    fn send_data(&mut self, shard: ShardId, msg: ShardMsg) -> Result<(), ShardMsg>;
    /// Queues on the (unbounded, low-volume) control queue.
    fn control(&mut self, shard: ShardId, msg: ShardMsg);
    /// Wakes shard `shard` if it is parked.
    fn wake(&mut self, shard: ShardId);
}

impl Outbox for ShardLinks {
    fn shards(&self) -> usize {
        self.data.len()
    }
    fn is_full(&self, shard: ShardId) -> bool {
        self.data[shard.index()].is_full()
    }
    fn send_data(&mut self, shard: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        self.data[shard.index()].send_quiet(msg)
    }
    fn control(&mut self, shard: ShardId, msg: ShardMsg) {
        ShardLinks::control(self, shard, msg)
    }
    fn wake(&mut self, shard: ShardId) {
        let _ = self.data[shard.index()].wake();
    }
}

/// One channel as the node sees it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// Bit i set: shard i has local subscribers.
    pub shards: u64,
    /// The epoch of each subscribed shard's latest subscribe (echoed in confirmations).
    epochs: Vec<(ShardId, u32)>,
    /// Shards waiting for confirmation (bit per shard).
    waiting: u64,
    /// SUBSCRIBE commands sent and not yet confirmed.
    inflight: u32,
    /// The last command sent for this channel was SUBSCRIBE (not UNSUBSCRIBE).
    on_wire: bool,
    /// The broker confirmed the latest SUBSCRIBE.
    pub live: bool,
    /// Live when the connection was lost (and not confirmed since): its subscribers
    /// may have missed messages and are owed a `gap` once it is live again.
    pub was_live: bool,
    /// Shards that lost a delivery of this channel (queue full) and are owed a gap.
    gap_owed: u64,
    /// The channel is on the router's `owed` list (at most once).
    listed: bool,
}

/// What the broker must do on the wire after a routing change.
#[derive(Debug, PartialEq, Eq)]
pub enum Wire {
    Nothing,
    Subscribe,
    Unsubscribe,
}

/// The routing table plus the dispatch path.
pub struct Router {
    routes: FastMap<Arc<str>, Route>,
    metrics: Arc<Metrics>,
    envelope: EnvelopeBuilder,
    /// Shards sent deliveries since the last `wake` (bit per shard).
    unwoken: u64,
    /// Channels with a gap notice owed to some shard, retried by `send_owed_gaps`.
    owed: Vec<Arc<str>>,
    /// Broker messages with a payload above this are dropped (a frame built from one
    /// would close every subscriber as a slow consumer, or exceed what clients accept).
    max_message: usize,
}

impl Router {
    pub fn new(metrics: Arc<Metrics>) -> Router {
        Router {
            routes: crate::hash::fast_map(),
            metrics,
            envelope: EnvelopeBuilder::default(),
            unwoken: 0,
            owed: Vec::new(),
            max_message: usize::MAX,
        }
    }

    /// Drops (counted, `gap` owed) broker messages whose payload exceeds `max`.
    pub fn with_max_message(mut self, max: usize) -> Router {
        self.max_message = max;
        self
    }

    /// Shard `shard` wants `channel`. Confirms at once if the subscription is live.
    pub fn subscribe(
        &mut self,
        out: &mut impl Outbox,
        channel: Arc<str>,
        shard: ShardId,
        epoch: u32,
    ) -> Wire {
        let bit = shard.bit();
        let route = self.routes.entry(channel.clone()).or_insert_with(|| Route {
            name: channel,
            shards: 0,
            epochs: Vec::new(),
            waiting: 0,
            inflight: 0,
            on_wire: false,
            live: false,
            was_live: false,
            gap_owed: 0,
            listed: false,
        });
        route.shards |= bit;
        match route.epochs.iter_mut().find(|(s, _)| *s == shard) {
            Some(e) => e.1 = epoch,
            None => route.epochs.push((shard, epoch)),
        }
        route.waiting &= !bit;
        if route.live {
            let name = route.name.clone();
            out.control(
                shard,
                ShardMsg::Subscribed {
                    channel: name,
                    epoch,
                },
            );
            Wire::Nothing
        } else {
            route.waiting |= bit;
            if !route.on_wire {
                route.on_wire = true;
                route.inflight += 1;
                Wire::Subscribe
            } else {
                Wire::Nothing
            }
        }
    }

    /// Shard `shard` no longer wants `channel`.
    pub fn unsubscribe(&mut self, channel: &str, shard: ShardId) -> Wire {
        let Some(route) = self.routes.get_mut(channel) else {
            return Wire::Nothing;
        };
        route.shards &= !(shard.bit());
        route.waiting &= !(shard.bit());
        route.epochs.retain(|(s, _)| *s != shard);
        if route.shards != 0 {
            return Wire::Nothing;
        }
        let was_subscribed = route.on_wire;
        route.on_wire = false;
        route.live = false;
        if route.inflight == 0 {
            self.routes.remove(channel);
        }
        if was_subscribed {
            Wire::Unsubscribe
        } else {
            Wire::Nothing
        }
    }

    /// A SUBSCRIBE for `channel` was confirmed by the broker.
    pub fn confirmed(&mut self, out: &mut impl Outbox, channel: &str) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        route.inflight = route.inflight.saturating_sub(1);
        if route.inflight > 0 {
            return;
        }
        if route.shards == 0 {
            self.routes.remove(channel);
            return;
        }
        if !route.on_wire {
            return;
        }
        route.live = true;
        route.was_live = false;
        for &(shard, epoch) in &route.epochs {
            if route.waiting & (shard.bit()) != 0 {
                let channel = route.name.clone();
                out.control(shard, ShardMsg::Subscribed { channel, epoch });
            }
        }
        route.waiting = 0;
    }

    /// The broker connection is lost: no channel is live until Redis confirms it again.
    /// Every shard is told (so new local subscribers wait for the confirmation instead
    /// of being answered at once), and every subscribed shard waits for a new
    /// `Subscribed` with the epoch it last asked with.
    pub fn lost(&mut self, out: &mut impl Outbox) {
        self.routes.retain(|_, r| r.shards != 0);
        for r in self.routes.values_mut() {
            r.was_live |= r.live;
            r.live = false;
            r.inflight = 0;
            r.on_wire = false;
            r.waiting = r.shards;
        }
        for shard in ShardId::all(out.shards()) {
            out.control(shard, ShardMsg::Unconfirmed);
        }
    }

    /// `lost` for one channel (Redis Cluster: the connection to its primary was lost, or
    /// its slot moved to another primary): not live until confirmed again; its shards
    /// are told and wait for a new `Subscribed`. A channel nobody wants any more is
    /// forgotten (returns false: do not subscribe it again).
    pub fn lost_one(&mut self, out: &mut impl Outbox, channel: &str) -> bool {
        let Some(r) = self.routes.get_mut(channel) else {
            return false;
        };
        if r.shards == 0 {
            self.routes.remove(channel);
            return false;
        }
        r.was_live |= r.live;
        r.live = false;
        r.inflight = 0;
        r.on_wire = false;
        r.waiting = r.shards;
        for shard in shards_of(r.shards) {
            let channel = r.name.clone();
            out.control(shard, ShardMsg::UnconfirmedChannel { channel });
        }
        true
    }

    /// A SUBSCRIBE for `channel` is about to be (re)sent after a reconnect.
    pub fn resubscribing(&mut self, channel: &str) {
        if let Some(route) = self.routes.get_mut(channel) {
            route.inflight = 1;
            route.on_wire = true;
        }
    }

    /// Forgets every broker subscription (a new connection). Returns the channels that
    /// still have local subscribers, to subscribe again.
    pub fn reset(&mut self) -> Vec<Arc<str>> {
        self.routes.retain(|_, r| r.shards != 0);
        self.routes
            .values_mut()
            .map(|r| {
                r.was_live |= r.live;
                r.live = false;
                r.inflight = 0;
                r.on_wire = false;
                r.waiting = r.shards;
                r.name.clone()
            })
            .collect()
    }

    /// Number of channels with local subscribers.
    pub fn channels(&self) -> usize {
        self.routes.len()
    }

    pub fn route(&self, channel: &str) -> Option<&Route> {
        self.routes.get(channel)
    }
}

/// The shard ids whose bits are set.
pub(super) fn shards_of(mask: u64) -> impl Iterator<Item = ShardId> {
    ShardId::each(mask)
}
