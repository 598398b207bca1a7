//! The node-wide routing table: channel → the set of shards with local subscribers, the
//! state of the broker subscription, and the dispatch of one frame to those shards.
//! Owned by exactly one broker thread; no locks.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{ShardId, ShardLinks, ShardMsg};
use crate::protocol::envelope::EnvelopeBuilder;

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
    routes: HashMap<Arc<str>, Route>,
    links: ShardLinks,
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
    pub fn new(links: ShardLinks) -> Router {
        Router {
            routes: HashMap::new(),
            links,
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

    pub fn links(&self) -> &ShardLinks {
        &self.links
    }

    /// Shard `shard` wants `channel`. Confirms at once if the subscription is live.
    pub fn subscribe(&mut self, channel: Arc<str>, shard: ShardId, epoch: u32) -> Wire {
        let bit = 1u64 << shard;
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
            self.links.control(
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
        route.shards &= !(1u64 << shard);
        route.waiting &= !(1u64 << shard);
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
    pub fn confirmed(&mut self, channel: &str) {
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
            if route.waiting & (1u64 << shard) != 0 {
                let channel = route.name.clone();
                self.links
                    .control(shard, ShardMsg::Subscribed { channel, epoch });
            }
        }
        route.waiting = 0;
    }

    /// The broker connection is lost: no channel is live until Redis confirms it again.
    /// Every shard is told (so new local subscribers wait for the confirmation instead
    /// of being answered at once), and every subscribed shard waits for a new
    /// `Subscribed` with the epoch it last asked with.
    pub fn lost(&mut self) {
        self.routes.retain(|_, r| r.shards != 0);
        for r in self.routes.values_mut() {
            r.was_live |= r.live;
            r.live = false;
            r.inflight = 0;
            r.on_wire = false;
            r.waiting = r.shards;
        }
        for shard in 0..self.links.control.len() {
            self.links.control(shard, ShardMsg::Unconfirmed);
        }
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

    /// Tells the local subscribers of `channel` that messages may have been missed. The
    /// notice goes through the data queue, behind the deliveries already queued, so a
    /// client sees it in stream order; a full queue owes it (see `send_owed_gaps`).
    pub fn gap(&mut self, channel: &str) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        route.gap_owed |= route.shards;
        Self::list_owed(&mut self.owed, route);
        Self::send_gaps(&self.links, route, &mut self.unwoken);
    }

    /// Sends what gap notices each shard of `route` is owed, if its queue has room.
    fn send_gaps(links: &ShardLinks, route: &mut Route, unwoken: &mut u64) {
        route.gap_owed &= route.shards;
        for shard in shards_of(route.gap_owed) {
            let gap = ShardMsg::Gap {
                channel: route.name.clone(),
            };
            if links.data[shard].send_quiet(gap).is_ok() {
                route.gap_owed &= !(1u64 << shard);
                *unwoken |= 1u64 << shard;
                links.metrics.gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Retries the gap notices owed to shards whose queue was full (once per broker
    /// loop turn; nothing to do in the common case). Call `wake` after it.
    pub fn send_owed_gaps(&mut self) {
        if self.owed.is_empty() {
            return;
        }
        let Router {
            routes,
            links,
            unwoken,
            owed,
            ..
        } = self;
        owed.retain(|name| match routes.get_mut(name) {
            Some(route) => {
                Self::send_gaps(links, route, unwoken);
                route.listed = route.gap_owed != 0;
                route.listed
            }
            None => false,
        });
    }

    /// Puts `route` on the owed list if it owes a gap and is not listed yet.
    fn list_owed(owed: &mut Vec<Arc<str>>, route: &mut Route) {
        if route.gap_owed != 0 && !route.listed {
            route.listed = true;
            owed.push(route.name.clone());
        }
    }

    /// Number of channels with local subscribers.
    pub fn channels(&self) -> usize {
        self.routes.len()
    }

    pub fn route(&self, channel: &str) -> Option<&Route> {
        self.routes.get(channel)
    }

    /// Wakes every shard that was handed deliveries since the last call: once per batch
    /// of messages, not once per message.
    pub fn wake(&mut self) {
        for shard in shards_of(self.unwoken) {
            self.links.data[shard].wake();
        }
        self.unwoken = 0;
    }

    /// Builds the delivery frame once and hands a clone to every interested shard
    /// (call `wake` after the batch).
    /// Returns the number of shards reached. Never blocks: a full queue drops and counts.
    pub fn dispatch(
        &mut self,
        channel: &str,
        payload: &[u8],
        payload_is_json: Option<bool>,
    ) -> usize {
        let Router {
            routes,
            links,
            envelope,
            unwoken,
            owed,
            max_message,
        } = self;
        let Some(route) = routes.get_mut(channel) else {
            links.metrics.unrouted.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        if payload.len() > *max_message {
            // Too large to deliver: dropped for everyone, counted, and announced.
            links
                .metrics
                .broker_too_large
                .fetch_add(1, Ordering::Relaxed);
            route.gap_owed |= route.shards;
            Self::list_owed(owed, route);
            return 0;
        }
        // Decide the targets before building anything: under overload most messages
        // are dropped here, and dropping must cost next to nothing.
        let mut targets = 0u64;
        let mut dropped = 0u64;
        for shard in shards_of(route.shards) {
            if links.data[shard].is_full() {
                route.gap_owed |= 1 << shard;
                dropped += 1;
            } else {
                targets |= 1 << shard;
            }
        }
        if targets != 0 {
            let frame: Bytes = match payload_is_json {
                Some(is_json) => envelope.build(channel, payload, is_json),
                None => envelope.build_checked(channel, payload),
            };
            let at = std::time::Instant::now();
            for shard in shards_of(targets) {
                let bit = 1u64 << shard;
                let tx = &links.data[shard];
                if route.gap_owed & bit != 0 {
                    // The first delivery after a loss is preceded by a gap notice.
                    let gap = ShardMsg::Gap {
                        channel: route.name.clone(),
                    };
                    if tx.send_quiet(gap).is_ok() {
                        route.gap_owed &= !bit;
                        links.metrics.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let msg = ShardMsg::Deliver {
                    channel: route.name.clone(),
                    frame: frame.clone(),
                    at,
                };
                if tx.send_quiet(msg).is_ok() {
                    *unwoken |= bit;
                } else {
                    route.gap_owed |= bit;
                    targets &= !bit;
                    dropped += 1;
                }
            }
        }
        Self::list_owed(owed, route);
        if dropped > 0 {
            links
                .metrics
                .dispatch_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        targets.count_ones() as usize
    }
}

/// The shard ids whose bits are set.
fn shards_of(mut mask: u64) -> impl Iterator<Item = ShardId> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let s = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::{inbox, Inbox};
    use crate::metrics::Metrics;
    use mio::{Poll, Token, Waker};

    type Inboxes = Vec<Inbox<ShardMsg>>;

    fn setup(n: usize) -> (Router, Inboxes, Inboxes, Vec<Poll>) {
        let (mut data, mut control, mut data_rx, mut control_rx, mut polls) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let poll = Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
            let (tx, rx) = inbox(waker.clone(), Some(16));
            data.push(tx);
            data_rx.push(rx);
            let (tx, rx) = inbox(waker, None);
            control.push(tx);
            control_rx.push(rx);
            polls.push(poll);
        }
        let metrics = Arc::new(Metrics::new(n));
        (
            Router::new(ShardLinks {
                data,
                control,
                metrics,
            }),
            data_rx,
            control_rx,
            polls,
        )
    }

    fn subscribed(rx: &Inbox<ShardMsg>) -> Vec<u32> {
        std::iter::from_fn(|| rx.try_recv())
            .filter_map(|m| match m {
                ShardMsg::Subscribed { epoch, .. } => Some(epoch),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn refcounts_per_shard_and_confirms_waiters() {
        let (mut r, _data, control, _p) = setup(2);
        assert_eq!(r.subscribe("c".into(), 0, 1), Wire::Subscribe);
        assert_eq!(r.subscribe("c".into(), 1, 1), Wire::Nothing);
        assert!(subscribed(&control[0]).is_empty());
        r.confirmed("c");
        assert_eq!(subscribed(&control[0]), vec![1]);
        assert_eq!(subscribed(&control[1]), vec![1]);
        // Live: a new shard subscription is confirmed at once.
        assert_eq!(r.unsubscribe("c", 1), Wire::Nothing);
        assert_eq!(r.subscribe("c".into(), 1, 2), Wire::Nothing);
        assert_eq!(subscribed(&control[1]), vec![2]);
        assert_eq!(r.unsubscribe("c", 0), Wire::Nothing);
        assert_eq!(r.unsubscribe("c", 1), Wire::Unsubscribe);
        assert_eq!(r.channels(), 0);
    }

    #[test]
    fn resubscribe_while_unsubscribe_in_flight_waits_for_the_latest_confirmation() {
        let (mut r, _data, control, _p) = setup(1);
        assert_eq!(r.subscribe("c".into(), 0, 1), Wire::Subscribe);
        assert_eq!(r.unsubscribe("c", 0), Wire::Unsubscribe);
        // Entry kept (one SUBSCRIBE in flight), but after the UNSUBSCRIBE a new
        // SUBSCRIBE must go out, and only its confirmation counts.
        assert_eq!(r.subscribe("c".into(), 0, 2), Wire::Subscribe);
        r.confirmed("c");
        assert!(subscribed(&control[0]).is_empty());
        r.confirmed("c");
        assert_eq!(subscribed(&control[0]), vec![2]);
    }

    #[test]
    fn dispatch_shares_one_frame_and_counts_drops() {
        let (mut r, data, _control, _p) = setup(2);
        r.subscribe("c".into(), 0, 1);
        r.subscribe("c".into(), 1, 1);
        assert_eq!(r.dispatch("c", b"1", Some(true)), 2);
        r.wake();
        let a = match data[0].try_recv() {
            Some(ShardMsg::Deliver { frame, .. }) => frame,
            other => panic!("{other:?}"),
        };
        let b = match data[1].try_recv() {
            Some(ShardMsg::Deliver { frame, .. }) => frame,
            other => panic!("{other:?}"),
        };
        assert_eq!(a.as_ptr(), b.as_ptr(), "one buffer shared by both shards");
        assert_eq!(r.dispatch("nobody", b"1", Some(true)), 0);
        for _ in 0..20 {
            r.dispatch("c", b"1", Some(true));
        }
        assert!(r.links().metrics.dispatch_dropped.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_dropped_delivery_is_followed_by_a_gap_notice() {
        let (mut r, data, _control, _p) = setup(1);
        r.subscribe("c".into(), 0, 1);
        for _ in 0..20 {
            r.dispatch("c", b"1", Some(true));
        }
        let queued = std::iter::from_fn(|| data[0].try_recv()).count();
        assert_eq!(queued, 16, "queue capacity");
        assert_eq!(
            r.links().metrics.dispatch_dropped.load(Ordering::Relaxed),
            4
        );
        assert_eq!(r.dispatch("c", b"2", Some(true)), 1);
        assert!(matches!(data[0].try_recv(), Some(ShardMsg::Gap { .. })));
        assert!(matches!(data[0].try_recv(), Some(ShardMsg::Deliver { .. })));
        // Owed once: the next delivery comes alone.
        r.dispatch("c", b"3", Some(true));
        assert!(matches!(data[0].try_recv(), Some(ShardMsg::Deliver { .. })));
        assert!(data[0].try_recv().is_none());
    }

    fn kinds(rx: &Inbox<ShardMsg>) -> Vec<&'static str> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|m| match m {
                ShardMsg::Deliver { .. } => "deliver",
                ShardMsg::Gap { .. } => "gap",
                ShardMsg::Subscribed { .. } => "subscribed",
                ShardMsg::Unconfirmed => "unconfirmed",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_gap_notice_queues_behind_the_deliveries_already_queued() {
        let (mut r, data, control, _p) = setup(1);
        r.subscribe("c".into(), 0, 1);
        r.confirmed("c");
        subscribed(&control[0]);
        r.dispatch("c", b"1", Some(true));
        r.dispatch("c", b"2", Some(true));
        r.gap("c");
        assert_eq!(kinds(&data[0]), ["deliver", "deliver", "gap"]);
        assert!(
            kinds(&control[0]).is_empty(),
            "no gap can overtake on another queue"
        );
        // Owed while the queue is full, sent as soon as it has room, without waiting
        // for the next delivery.
        for _ in 0..16 {
            r.dispatch("c", b"1", Some(true));
        }
        r.gap("c");
        r.send_owed_gaps();
        assert_eq!(kinds(&data[0]).len(), 16);
        r.send_owed_gaps();
        assert_eq!(kinds(&data[0]), ["gap"]);
        r.send_owed_gaps();
        assert!(kinds(&data[0]).is_empty(), "owed once");
    }

    #[test]
    fn an_oversized_message_is_dropped_counted_and_owes_a_gap() {
        let (r, data, _control, _p) = setup(2);
        let mut r = r.with_max_message(4);
        r.subscribe("c".into(), 0, 1);
        r.subscribe("c".into(), 1, 1);
        assert_eq!(r.dispatch("c", b"12345", Some(true)), 0);
        assert_eq!(
            r.links().metrics.broker_too_large.load(Ordering::Relaxed),
            1
        );
        assert!(kinds(&data[0]).is_empty());
        assert_eq!(r.dispatch("c", b"1234", Some(true)), 2);
        assert_eq!(kinds(&data[0]), ["gap", "deliver"]);
        r.dispatch("c", b"123456", Some(true));
        r.send_owed_gaps();
        assert_eq!(kinds(&data[1]), ["gap", "deliver", "gap"]);
    }

    #[test]
    fn a_lost_connection_unconfirms_every_route_until_resubscribed() {
        let (mut r, _data, control, _p) = setup(2);
        assert_eq!(r.subscribe("c".into(), 0, 7), Wire::Subscribe);
        r.confirmed("c");
        assert_eq!(kinds(&control[0]), ["subscribed"]);
        r.lost();
        assert_eq!(kinds(&control[0]), ["unconfirmed"]);
        assert_eq!(kinds(&control[1]), ["unconfirmed"]);
        assert!(!r.route("c").unwrap().live);
        // A new shard is not confirmed while the connection is down...
        r.subscribe("c".into(), 1, 3);
        assert!(kinds(&control[1]).is_empty());
        // ...and on resubscribe every shard is confirmed again, with its own epoch.
        for ch in r.reset() {
            r.resubscribing(&ch);
        }
        r.confirmed("c");
        assert_eq!(subscribed(&control[0]), vec![7]);
        assert_eq!(subscribed(&control[1]), vec![3]);
    }

    #[test]
    fn reset_keeps_channels_with_subscribers() {
        let (mut r, _d, _c, _p) = setup(1);
        r.subscribe("a".into(), 0, 1);
        r.confirmed("a");
        let again = r.reset();
        assert_eq!(again.len(), 1);
        assert!(!r.route("a").unwrap().live);
    }
}
