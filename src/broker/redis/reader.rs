//! The Redis reader thread: owns the SUBSCRIBE connection and the node's routing table.
//! It subscribes on a channel's first local subscriber and unsubscribes after the last
//! (batched per loop turn), decodes every message once, builds its frame once and hands
//! it to the interested shards. After a reconnect it resubscribes everything and sends
//! a gap notice; a private probe channel proves the path end to end; the nodes' control
//! channel (`protocol::control`) is subscribed for the reader's lifetime and its
//! commands go to every shard. It never blocks on
//! a shard: what a full shard queue cannot take is dropped and counted by the router.
//! It owns no thread or poll: `driver.rs` runs it on its own thread or on a shard's loop.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::{Registry, Token};

use super::turn::Turn;
use crate::broker::router::Wire;
use crate::broker::{BrokerCmd, Router, ShardLinks};
use crate::health::Health;
use crate::inbox::{Inbox, InboxSender};
use crate::protocol::channel::CONTROL_CHANNEL;
pub use crate::protocol::channel::PROBE_PREFIX;
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
/// See `config::Tuning`.
const BATCH: usize = crate::config::TUNING.subscribe_batch;
/// How often the probe is published.
/// See `config::Tuning`.
const PROBE_EVERY: Duration = crate::config::TUNING.probe_every;
/// A probe not back within this long means the subscriber is deaf.
/// See `config::Tuning`.
const PROBE_TIMEOUT: Duration = crate::config::TUNING.probe_timeout;

/// The reader's state and decisions. Whoever drives it (its own thread, or a shard's
/// loop: `driver.rs`) polls the link's socket on `registry` and calls `ready` and `turn`.
pub struct Reader {
    /// Where the link's socket is registered: the driver's `Poll`.
    registry: Registry,
    link: Link,
    router: Router,
    /// The shards' queues: where the router's messages go.
    links: ShardLinks,
    health: Arc<Health>,
    writer: InboxSender<BrokerCmd>,
    probe_channel: Arc<str>,
    /// Sequence of the last probe sent, and when; the last one seen back.
    probe_sent: Option<(u64, Instant)>,
    probe_seq: u64,
    next_probe: Instant,
    probe_subscribed: bool,
    /// Channels resubscribed after a reconnect, owed a gap notice once confirmed.
    owe_gap: HashSet<Arc<str>>,
    /// SUBSCRIBE (true) / UNSUBSCRIBE (false) commands of this turn, in the order the
    /// routing changes happened: a channel's commands must reach Redis in order.
    to_send: Vec<(bool, Arc<str>)>,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Registry,
        token: Token,
        url: RedisUrl,
        links: ShardLinks,
        health: Arc<Health>,
        writer: InboxSender<BrokerCmd>,
        server_id: String,
        max_message: usize,
    ) -> Reader {
        Reader {
            registry,
            link: Link::new(url, token, "reader"),
            router: Router::new(links.metrics.clone()).with_max_message(max_message),
            links,
            health,
            writer,
            probe_channel: Arc::from(format!("{PROBE_PREFIX}{server_id}:{}", std::process::id())),
            probe_sent: None,
            probe_seq: 0,
            next_probe: Instant::now(),
            probe_subscribed: false,
            owe_gap: HashSet::new(),
            to_send: Vec::new(),
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent, now: Instant) {
        match ev {
            LinkEvent::Connected => self.connected(),
            LinkEvent::Lost => self.forget(now),
            LinkEvent::Nothing => {}
        }
    }

    /// A fresh connection: subscribe the probe and every channel with local subscribers.
    fn connected(&mut self) {
        let reconnect = self.link.was_up;
        if reconnect {
            self.links
                .metrics
                .broker_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        self.link.was_up = true;
        let channels = self.router.reset();
        tracing::info!(channels = channels.len(), reconnect, "subscribing");
        self.to_send.clear();
        self.to_send.push((true, self.probe_channel.clone()));
        self.to_send.push((true, Arc::from(CONTROL_CHANNEL)));
        for ch in channels {
            self.router.resubscribing(&ch);
            // Only subscribers that were confirmed before the loss can have missed
            // anything; a channel first asked for while Redis was down owes no gap.
            let was_live = self.router.route(&ch).map(|r| r.was_live).unwrap_or(false);
            if reconnect && was_live {
                self.owe_gap.insert(ch.clone());
            }
            self.to_send.push((true, ch));
        }
        self.probe_subscribed = false;
        self.probe_sent = None;
        self.health.subscriber_ok.store(true, Ordering::Relaxed);
    }

    /// The connection is gone: nothing is subscribed any more.
    fn forget(&mut self, _now: Instant) {
        self.health.subscriber_ok.store(false, Ordering::Relaxed);
        self.router.lost(&mut self.links);
        self.health.probe_ok.store(false, Ordering::Relaxed);
        self.probe_subscribed = false;
        self.probe_sent = None;
        self.to_send.clear();
    }

    fn lost(&mut self, now: Instant) {
        self.link.disconnect(&self.registry, now);
        self.forget(now);
    }

    fn drain_inbox(&mut self, inbox: &Inbox<BrokerCmd>) {
        while let Some(cmd) = inbox.try_recv() {
            match cmd {
                BrokerCmd::Subscribe {
                    channel,
                    shard,
                    epoch,
                } => {
                    if self
                        .router
                        .subscribe(&mut self.links, channel.clone(), shard, epoch)
                        == Wire::Subscribe
                    {
                        self.owe_gap.remove(&channel);
                        if self.link.is_up() {
                            self.to_send.push((true, channel));
                        }
                    }
                }
                BrokerCmd::Unsubscribe { channel, shard } => {
                    if self.router.unsubscribe(&channel, shard) == Wire::Unsubscribe
                        && self.link.is_up()
                    {
                        self.owe_gap.remove(&channel);
                        self.to_send.push((false, channel));
                    }
                }
                BrokerCmd::Publish { .. } | BrokerCmd::History(_) => {}
            }
        }
    }

    /// Writes the SUBSCRIBE/UNSUBSCRIBE commands of this turn in the order they were
    /// decided (per channel order is what matters: SUBSCRIBE c then UNSUBSCRIBE c must
    /// not become the reverse), each run of one verb batched into commands of `BATCH`.
    fn write_subscriptions(&mut self) {
        if !self.link.is_up() {
            return;
        }
        let mut args: Vec<&[u8]> = Vec::new();
        for run in self.to_send.chunk_by(|a, b| a.0 == b.0) {
            let verb: &[u8] = if run[0].0 {
                b"SUBSCRIBE"
            } else {
                b"UNSUBSCRIBE"
            };
            for chunk in run.chunks(BATCH) {
                args.clear();
                args.push(verb);
                args.extend(chunk.iter().map(|(_, c)| c.as_bytes()));
                resp::encode(&mut self.link.wbuf, &args);
            }
        }
        drop(args);
        self.to_send.clear();
    }

    fn read_messages(&mut self, now: Instant) {
        let metrics = self.links.metrics.clone();
        let mut count = 0u64;
        loop {
            // Fast path: `message` pushes straight from the read buffer.
            if !self.link.handshake_pending() {
                match resp::peek_message(&self.link.rbuf) {
                    resp::Push::Message {
                        channel,
                        payload,
                        len,
                    } => {
                        count += 1;
                        match std::str::from_utf8(channel) {
                            Ok(ch) if *ch == *self.probe_channel => {
                                let payload = payload.to_vec();
                                self.link.rbuf.advance(len);
                                self.probe_back(&payload);
                            }
                            Ok(CONTROL_CHANNEL) => {
                                self.links.control_message(payload);
                                self.link.rbuf.advance(len);
                            }
                            Ok(ch) => {
                                let (offset, data) = super::history::split_marked(payload);
                                self.router
                                    .dispatch(&mut self.links, ch, data, None, offset);
                                self.link.rbuf.advance(len);
                            }
                            Err(_) => self.link.rbuf.advance(len),
                        }
                        continue;
                    }
                    resp::Push::Incomplete => break,
                    resp::Push::Other => {}
                }
            }
            match self.link.next_value() {
                Ok(None) => break,
                Ok(Some(Value::Array(items))) => {
                    count += 1;
                    self.on_push(items);
                }
                Ok(Some(other)) => tracing::debug!("unexpected value on subscriber: {other:?}"),
                Err(e) => {
                    tracing::warn!("bad data from Redis ({}): reconnecting", e.0);
                    self.lost(now);
                    break;
                }
            }
        }
        self.router.send_owed_gaps(&mut self.links);
        self.router.wake(&mut self.links);
        metrics.broker_messages.fetch_add(count, Ordering::Relaxed);
    }

    fn on_push(&mut self, items: Vec<Value>) {
        let mut it = items.into_iter();
        let (Some(Value::Bulk(kind)), Some(Value::Bulk(channel))) = (it.next(), it.next()) else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return;
        };
        match &kind[..] {
            b"message" => {
                let Some(Value::Bulk(payload)) = it.next() else {
                    return;
                };
                if *channel == *self.probe_channel {
                    self.probe_back(&payload);
                } else if channel == CONTROL_CHANNEL {
                    self.links.control_message(&payload);
                } else {
                    let (offset, data) = super::history::split_marked(&payload);
                    self.router
                        .dispatch(&mut self.links, channel, data, None, offset);
                }
            }
            b"subscribe" => {
                if *channel == *self.probe_channel {
                    self.probe_subscribed = true;
                    return;
                }
                if channel == CONTROL_CHANNEL {
                    return;
                }
                self.router.confirmed(&mut self.links, channel);
                if self.owe_gap.remove(channel) {
                    let live = self.router.route(channel).map(|r| r.live).unwrap_or(false);
                    if live {
                        self.router.gap(&mut self.links, channel);
                    }
                }
            }
            _ => {}
        }
    }

    /// Publishes a probe through the writer once a second, and reconnects the subscriber
    /// if the previous one did not come back in time.
    fn probe(&mut self, now: Instant) {
        if !self.link.is_up() || !self.probe_subscribed {
            return;
        }
        match self.probe_sent {
            Some((_, at)) if now.duration_since(at) > PROBE_TIMEOUT => {
                self.health.probe_ok.store(false, Ordering::Relaxed);
                self.probe_sent = None;
                // A probe lost while the publisher was down proves nothing about the
                // subscriber; one lost while it was up means the subscriber is deaf.
                if self.health.publisher_ok.load(Ordering::Relaxed) {
                    tracing::warn!("pub/sub probe lost: reconnecting the subscriber");
                    self.lost(now);
                }
            }
            Some(_) => {}
            None if now >= self.next_probe && self.health.publisher_ok.load(Ordering::Relaxed) => {
                // An unpredictable value per probe: a Redis client that sees the probe
                // channel cannot answer a probe before it is sent.
                self.probe_seq = unpredictable(self.probe_seq);
                let cmd = BrokerCmd::Publish {
                    channel: self.probe_channel.as_ref().into(),
                    payload: Bytes::from(self.probe_seq.to_string()),
                    ack: None,
                };
                if self.writer.send(cmd).is_ok() {
                    self.probe_sent = Some((self.probe_seq, now));
                    self.next_probe = now + PROBE_EVERY;
                }
            }
            None => {}
        }
    }

    fn probe_back(&mut self, payload: &[u8]) {
        let seq = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(seq), Some((sent, _))) = (seq, self.probe_sent) {
            if seq == sent {
                self.health.probe_ok.store(true, Ordering::Relaxed);
                self.probe_sent = None;
            }
        }
    }
}

impl Turn for Reader {
    fn token(&self) -> Token {
        self.link.token()
    }

    /// The poll timeout: the link's next deadline, the probe's, at most 250 ms.
    fn timeout(&self, now: Instant) -> Duration {
        self.link
            .timeout(now)
            .unwrap_or(PROBE_EVERY)
            .min(Duration::from_millis(250))
    }

    fn ready(&mut self, now: Instant) {
        let ev = self.link.on_ready(&self.registry, now);
        self.on_link_event(ev, now);
    }

    /// One loop turn: connect or reconnect, deliver what Redis sent, take the shards'
    /// subscription changes, write them, probe, flush.
    fn turn(&mut self, inbox: &Inbox<BrokerCmd>, now: Instant) {
        let ev = self.link.maintain(&self.registry, now);
        self.on_link_event(ev, now);
        self.read_messages(now);
        super::note_auth(&mut self.link, &self.health, &self.links.metrics);
        self.drain_inbox(inbox);
        self.write_subscriptions();
        self.probe(now);
        if self.link.is_up() && self.link.flush().is_err() {
            self.lost(now);
        }
        let metrics = &self.links.metrics;
        metrics
            .channels
            .store(self.router.channels() as u64, Ordering::Relaxed);
    }
}

/// A value nobody outside this process can predict from the previous one (SipHash with
/// the process's random keys; a fresh key pair for every call).
pub(crate) fn unpredictable(previous: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(previous);
    h.finish()
}
