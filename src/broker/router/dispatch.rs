//! The dispatch path: one frame built per message and a clone handed to every
//! interested shard's data queue, never blocking — a full queue drops, counts and owes
//! the channel's subscribers on that shard a `gap`, sent in stream order on the data
//! queue before their next delivery (or by `send_owed_gaps` as soon as there is room).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{shards_of, Outbox, Route, Router};
use crate::msg::ShardMsg;

impl Router {
    /// Tells the local subscribers of `channel` that messages may have been missed. The
    /// notice goes through the data queue, behind the deliveries already queued, so a
    /// client sees it in stream order; a full queue owes it (see `send_owed_gaps`).
    pub fn gap(&mut self, out: &mut impl Outbox, channel: &str) {
        let Some(route) = self.routes.get_mut(channel) else {
            return;
        };
        route.gap_owed |= route.shards;
        Self::list_owed(&mut self.owed, route);
        Self::send_gaps(out, &self.metrics, route, &mut self.unwoken);
    }

    /// Sends what gap notices each shard of `route` is owed, if its queue has room.
    fn send_gaps(
        out: &mut impl Outbox,
        metrics: &crate::metrics::Metrics,
        route: &mut Route,
        unwoken: &mut u64,
    ) {
        route.gap_owed &= route.shards;
        for shard in shards_of(route.gap_owed) {
            let gap = ShardMsg::Gap {
                channel: route.name.clone(),
            };
            if out.send_data(shard, gap).is_ok() {
                route.gap_owed &= !(shard.bit());
                *unwoken |= shard.bit();
                metrics.gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Retries the gap notices owed to shards whose queue was full (once per broker
    /// loop turn; nothing to do in the common case). Call `wake` after it.
    pub fn send_owed_gaps(&mut self, out: &mut impl Outbox) {
        if self.owed.is_empty() {
            return;
        }
        let Router {
            routes,
            metrics,
            unwoken,
            owed,
            ..
        } = self;
        owed.retain(|name| match routes.get_mut(name) {
            Some(route) => {
                Self::send_gaps(out, metrics, route, unwoken);
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

    /// Wakes every shard that was handed deliveries since the last call: once per batch
    /// of messages, not once per message.
    pub fn wake(&mut self, out: &mut impl Outbox) {
        for shard in shards_of(self.unwoken) {
            out.wake(shard);
        }
        self.unwoken = 0;
    }

    /// Builds the delivery frame once and hands a clone to every interested shard
    /// (call `wake` after the batch).
    /// Returns the number of shards reached. Never blocks: a full queue drops and counts.
    pub fn dispatch(
        &mut self,
        out: &mut impl Outbox,
        channel: &str,
        payload: &[u8],
        payload_is_json: Option<bool>,
        offset: Option<crate::offset::Offset>,
    ) -> usize {
        let Router {
            routes,
            metrics,
            envelope,
            unwoken,
            owed,
            max_message,
        } = self;
        let Some(route) = routes.get_mut(channel) else {
            metrics.unrouted.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        if payload.len() > *max_message {
            // Too large to deliver: dropped for everyone, counted, and announced.
            metrics.broker_too_large.fetch_add(1, Ordering::Relaxed);
            route.gap_owed |= route.shards;
            Self::list_owed(owed, route);
            return 0;
        }
        // Decide the targets before building anything: under overload most messages
        // are dropped here, and dropping must cost next to nothing.
        let mut targets = 0u64;
        let mut dropped = 0u64;
        for shard in shards_of(route.shards) {
            if out.is_full(shard) {
                route.gap_owed |= shard.bit();
                dropped += 1;
            } else {
                targets |= shard.bit();
            }
        }
        if targets != 0 {
            let frame: Bytes = match payload_is_json {
                Some(is_json) => envelope.build_at(channel, payload, is_json, offset.as_ref()),
                None => envelope.build_checked_at(channel, payload, offset.as_ref()),
            };
            let at = std::time::Instant::now();
            for shard in shards_of(targets) {
                let bit = shard.bit();
                if route.gap_owed & bit != 0 {
                    // The first delivery after a loss is preceded by a gap notice.
                    let gap = ShardMsg::Gap {
                        channel: route.name.clone(),
                    };
                    if out.send_data(shard, gap).is_ok() {
                        route.gap_owed &= !bit;
                        metrics.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let msg = ShardMsg::Deliver {
                    channel: route.name.clone(),
                    frame: frame.clone(),
                    at,
                    offset,
                };
                if out.send_data(shard, msg).is_ok() {
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
            metrics
                .dispatch_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        targets.count_ones() as usize
    }
}
