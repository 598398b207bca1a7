//! What a primary's subscriber connection receives: `smessage` pushes (the fast path
//! straight from the read buffer, as in single-Redis mode), `ssubscribe` confirmations,
//! `sunsubscribe`s (ours, or Redis moving a slot away), `-MOVED` errors; and the probe of
//! each primary, published through the writer and expected back. Never blocks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{Node, Reader, PROBE_EVERY, PROBE_TIMEOUT};
use crate::broker::redis::history::split_marked;
use crate::broker::BrokerCmd;
use crate::protocol::channel::CONTROL_CHANNEL;
use crate::redis::cluster::{key_slot, parse_redirect};
use crate::redis::resp::{self, Value};

impl Reader {
    pub(super) fn read_messages(&mut self, key: usize, now: Instant) {
        let metrics = self.links.metrics.clone();
        let mut count = 0u64;
        loop {
            let n = &mut self.nodes[key];
            if !n.link.handshake_pending() {
                match resp::peek_smessage(&n.link.rbuf) {
                    resp::Push::Message {
                        channel,
                        payload,
                        len,
                    } => {
                        count += 1;
                        match std::str::from_utf8(channel) {
                            Ok(ch) if n.probe.as_deref() == Some(ch) => {
                                let payload = payload.to_vec();
                                n.link.rbuf.advance(len);
                                probe_back(n, &payload);
                            }
                            Ok(CONTROL_CHANNEL) => {
                                self.links.control_message(payload);
                                n.link.rbuf.advance(len);
                            }
                            // Only the connection that holds the channel delivers it:
                            // a primary demoted by a failover still receives the new
                            // primary's messages over the cluster bus, and would deliver them
                            // a second time, out of order.
                            Ok(ch) if n.channels.contains(ch) => {
                                let (offset, data) = split_marked(payload);
                                self.router
                                    .dispatch(&mut self.links, ch, data, None, offset);
                                n.link.rbuf.advance(len);
                            }
                            Ok(_) => {
                                metrics.broker_stale_link.fetch_add(1, Ordering::Relaxed);
                                n.link.rbuf.advance(len);
                            }
                            Err(_) => n.link.rbuf.advance(len),
                        }
                        continue;
                    }
                    resp::Push::Incomplete => break,
                    resp::Push::Other => {}
                }
            }
            match n.link.next_value() {
                Ok(None) => break,
                Ok(Some(Value::Array(items))) => {
                    count += 1;
                    self.on_push(key, items);
                }
                Ok(Some(Value::Error(e))) => self.on_error(key, &e),
                Ok(Some(other)) => tracing::debug!("unexpected value on subscriber: {other:?}"),
                Err(e) => {
                    tracing::warn!("bad data from Redis ({}): reconnecting", e.0);
                    self.lost(key, now);
                    break;
                }
            }
        }
        metrics.broker_messages.fetch_add(count, Ordering::Relaxed);
    }

    /// An error on a subscriber connection: a `-MOVED` for an SSUBSCRIBE sent to a
    /// node that no longer serves the slot moves that slot's channels.
    pub(super) fn on_error(&mut self, key: usize, e: &[u8]) {
        let Some(r) = parse_redirect(e) else {
            tracing::warn!(
                node = ?self.nodes[key].addr,
                "Redis refused a subscription: {}",
                String::from_utf8_lossy(e)
            );
            return;
        };
        let gone: Vec<Arc<str>> = self.nodes[key]
            .channels
            .iter()
            .filter(|c| key_slot(c.as_bytes()) == r.slot)
            .cloned()
            .collect();
        for ch in gone {
            self.displaced(&ch);
        }
        let n = &mut self.nodes[key];
        if n.probe
            .as_deref()
            .is_some_and(|p| key_slot(p.as_bytes()) == r.slot)
        {
            n.probe_subscribed = false;
        }
        self.topo.request();
    }

    pub(super) fn on_push(&mut self, key: usize, items: Vec<Value>) {
        let mut it = items.into_iter();
        let (Some(Value::Bulk(kind)), Some(Value::Bulk(channel))) = (it.next(), it.next()) else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return;
        };
        let n = &mut self.nodes[key];
        let own = n.probe.as_deref() == Some(channel);
        match &kind[..] {
            b"smessage" => {
                let Some(Value::Bulk(payload)) = it.next() else {
                    return;
                };
                if own {
                    probe_back(n, &payload);
                } else if channel == CONTROL_CHANNEL {
                    self.links.control_message(&payload);
                } else if !n.channels.contains(channel) {
                    // Not this connection's channel (see `read_messages`).
                    self.links
                        .metrics
                        .broker_stale_link
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    let (offset, data) = split_marked(&payload);
                    self.router
                        .dispatch(&mut self.links, channel, data, None, offset);
                }
            }
            b"ssubscribe" => {
                if own {
                    n.probe_subscribed = true;
                    return;
                }
                if channel == CONTROL_CHANNEL || !n.channels.contains(channel) {
                    return;
                }
                self.router.confirmed(&mut self.links, channel);
                if self.owe_gap.remove(channel) {
                    let live = self.router.route(channel).is_some_and(|r| r.live);
                    if live {
                        self.router.gap(&mut self.links, channel);
                    }
                }
            }
            b"sunsubscribe" => {
                if let Some(count) = n.unsubscribing.get_mut(channel) {
                    *count -= 1;
                    if *count == 0 {
                        n.unsubscribing.remove(channel);
                    }
                    return;
                }
                // Redis unsubscribed us on its own: the slot moved to another primary.
                tracing::info!(node = ?n.addr, channel, "slot moved: resubscribing");
                if own {
                    n.probe_subscribed = false;
                    n.probe = None;
                    self.topo.request();
                } else if channel == CONTROL_CHANNEL {
                    n.control = false;
                    self.ousted.note(CONTROL_CHANNEL, &n.addr, Instant::now());
                    self.topo.request();
                } else {
                    self.displaced(channel);
                }
            }
            _ => {}
        }
    }

    /// Publishes node `key`'s probe through the writer once a second; a probe not
    /// back in time (while the writer is up) means the subscriber is deaf: reconnect.
    pub(super) fn probe(&mut self, key: usize, now: Instant) {
        let n = &mut self.nodes[key];
        if !n.link.is_up() || !n.probe_subscribed {
            return;
        }
        let Some(channel) = n.probe.clone() else {
            return;
        };
        match n.probe_sent {
            Some((_, at)) if now.duration_since(at) > PROBE_TIMEOUT => {
                n.probe_ok = false;
                n.probe_sent = None;
                if self.health.publisher_ok.load(Ordering::Relaxed) {
                    tracing::warn!(node = ?n.addr, "pub/sub probe lost: reconnecting the subscriber");
                    self.lost(key, now);
                }
            }
            Some(_) => {}
            None if now >= n.next_probe && self.health.publisher_ok.load(Ordering::Relaxed) => {
                self.probe_seq = crate::broker::redis::reader::unpredictable(self.probe_seq);
                let cmd = BrokerCmd::Publish {
                    channel: channel.as_ref().into(),
                    payload: Bytes::from(self.probe_seq.to_string()),
                    ack: None,
                };
                if self.writer.send(cmd).is_ok() {
                    n.probe_sent = Some((self.probe_seq, now));
                    n.next_probe = now + PROBE_EVERY;
                }
            }
            None => {}
        }
    }
}

fn probe_back(n: &mut Node, payload: &[u8]) {
    let seq = std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if let (Some(seq), Some((sent, _))) = (seq, n.probe_sent) {
        if seq == sent {
            n.probe_ok = true;
            n.probe_sent = None;
        }
    }
}
