//! The cluster reader thread: one `SSUBSCRIBE` connection per primary, the node's
//! `Router` (reference counting and `subscribed` after Redis confirmed, as in single-Redis
//! mode), a probe per primary (a channel whose slot that primary serves, published
//! through the writer every second), and the nodes' control channel on its slot's
//! primary. A channel is subscribed on the primary that serves its slot; a lost
//! primary connection, a `sunsubscribe` Redis sent on its own (the slot migrated) or a
//! `-MOVED` refreshes the slot map, and every affected channel is subscribed again on
//! its owner, its subscribers told `gap` (history channels repair from history). It
//! never blocks on a shard or on Redis.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use mio::{Events, Poll, Token};
use slab::Slab;

use super::topology::{self, Topology};
use super::{channel_on, owner, primaries, Addr, FIRST, TOPOLOGY};
use crate::broker::redis::history::split_marked;
use crate::broker::router::Wire;
use crate::broker::{BrokerCmd, Router, ShardLinks};
use crate::health::Health;
use crate::inbox::{Inbox, InboxSender};
use crate::protocol::channel::PROBE_PREFIX;
use crate::protocol::control::CONTROL_CHANNEL;
use crate::redis::cluster::{key_slot, parse_redirect, SlotMap};
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

const PROBE_EVERY: Duration = crate::config::TUNING.probe_every;
const PROBE_TIMEOUT: Duration = crate::config::TUNING.probe_timeout;

/// One primary's subscriber connection.
struct Node {
    addr: Addr,
    link: Link,
    /// Still a primary in the latest map.
    primary: bool,
    /// Channels with local subscribers placed on this node.
    channels: HashSet<Arc<str>>,
    /// Our own SUNSUBSCRIBEs not yet confirmed, per channel (any other `sunsubscribe`
    /// is Redis telling us the slot moved).
    unsubscribing: HashMap<Arc<str>, u32>,
    /// SSUBSCRIBE (true) / SUNSUBSCRIBE (false) of this turn, in decision order.
    to_send: Vec<(bool, Arc<str>)>,
    /// The node's own channels: its probe, and the control channel if its slot is here.
    probe: Option<Arc<str>>,
    control: bool,
    probe_subscribed: bool,
    probe_sent: Option<(u64, Instant)>,
    probe_ok: bool,
    next_probe: Instant,
}

pub struct Reader {
    poll: Poll,
    inbox: Inbox<BrokerCmd>,
    router: Router,
    links: ShardLinks,
    health: Arc<Health>,
    writer: InboxSender<BrokerCmd>,
    stop: Arc<AtomicBool>,
    topo: Topology,
    tls: bool,
    nodes: Slab<Node>,
    /// Channel → the node it is placed on.
    placed: HashMap<Arc<str>, usize>,
    /// Channels with local subscribers and no node yet (no map, or slot unserved).
    unplaced: HashSet<Arc<str>>,
    /// Channels resubscribed after a loss, owed a gap once confirmed.
    owe_gap: HashSet<Arc<str>>,
    probe_prefix: String,
    probe_seq: u64,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        inbox: Inbox<BrokerCmd>,
        seeds: Vec<RedisUrl>,
        shared: Arc<topology::Shared>,
        links: ShardLinks,
        health: Arc<Health>,
        writer: InboxSender<BrokerCmd>,
        server_id: &str,
        max_message: usize,
        stop: Arc<AtomicBool>,
    ) -> Reader {
        Reader {
            poll,
            inbox,
            router: Router::new(links.metrics.clone()).with_max_message(max_message),
            links,
            health,
            writer,
            stop,
            tls: seeds[0].tls.is_some(),
            topo: Topology::new(seeds, TOPOLOGY, shared),
            nodes: Slab::new(),
            placed: HashMap::new(),
            unplaced: HashSet::new(),
            owe_gap: HashSet::new(),
            probe_prefix: format!("{PROBE_PREFIX}{server_id}:{}:", std::process::id()),
            probe_seq: 0,
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut timeout = self.topo.timeout(now);
            for (_, n) in &self.nodes {
                if let Some(t) = n.link.timeout(now) {
                    timeout = timeout.min(t);
                }
            }
            if !self.inbox.park() {
                timeout = Duration::ZERO;
            }
            let _ = self.poll.poll(&mut events, Some(timeout));
            self.inbox.unpark();
            let now = Instant::now();
            let mut topo_ready = false;
            for event in events.iter() {
                match event.token() {
                    TOPOLOGY => topo_ready = true,
                    Token(t) if t >= FIRST => {
                        let key = t - FIRST;
                        if let Some(n) = self.nodes.get_mut(key) {
                            let ev = n.link.on_ready(self.poll.registry(), now);
                            self.on_link_event(key, ev, now);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(map) = self.topo.turn(self.poll.registry(), topo_ready, now) {
                self.apply_map(&map, now);
            }
            let keys: Vec<usize> = self.nodes.iter().map(|(k, _)| k).collect();
            for &key in &keys {
                let ev = self.nodes[key].link.maintain(self.poll.registry(), now);
                self.on_link_event(key, ev, now);
                self.read_messages(key, now);
                let n = &mut self.nodes[key];
                crate::broker::redis::note_auth(&mut n.link, &self.health, &self.links.metrics);
            }
            self.drain_inbox();
            for &key in &keys {
                self.probe(key, now);
                self.write_subscriptions(key);
                let n = &mut self.nodes[key];
                if n.link.is_up() && n.link.flush().is_err() {
                    self.lost(key, now);
                }
            }
            self.router.send_owed_gaps(&mut self.links);
            self.router.wake(&mut self.links);
            self.update_health();
            self.links
                .metrics
                .channels
                .store(self.router.channels() as u64, Ordering::Relaxed);
        }
    }

    fn update_health(&mut self) {
        let known = self.topo.map().is_some();
        let mut up = known;
        let mut probes = known;
        for (_, n) in self.nodes.iter().filter(|(_, n)| n.primary) {
            up &= n.link.is_up();
            probes &= n.probe_ok;
        }
        if !up {
            // Some primary is out of reach: keep looking for its successor.
            self.topo.request();
        }
        self.health.subscriber_ok.store(up, Ordering::Relaxed);
        self.health.probe_ok.store(probes, Ordering::Relaxed);
    }

    fn on_link_event(&mut self, key: usize, ev: LinkEvent, now: Instant) {
        match ev {
            LinkEvent::Connected => self.connected(key),
            LinkEvent::Lost => self.forget(key, now),
            LinkEvent::Nothing => {}
        }
    }

    /// A fresh connection to a primary: subscribe its own channels and every channel
    /// placed on it.
    fn connected(&mut self, key: usize) {
        let n = &mut self.nodes[key];
        if n.link.was_up {
            self.links
                .metrics
                .broker_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        n.link.was_up = true;
        n.to_send.clear();
        n.unsubscribing.clear();
        n.probe_subscribed = false;
        n.probe_sent = None;
        if let Some(p) = &n.probe {
            n.to_send.push((true, p.clone()));
        }
        if n.control {
            n.to_send.push((true, Arc::from(CONTROL_CHANNEL)));
        }
        let channels: Vec<Arc<str>> = n.channels.iter().cloned().collect();
        tracing::info!(node = ?n.addr, channels = channels.len(), "cluster subscriber up");
        for ch in channels {
            self.resubscribe(key, ch);
        }
    }

    /// Queues the SSUBSCRIBE of `ch` on node `key` (up), with the router told.
    fn resubscribe(&mut self, key: usize, ch: Arc<str>) {
        self.router.resubscribing(&ch);
        if self.router.route(&ch).is_some_and(|r| r.was_live) {
            self.owe_gap.insert(ch.clone());
        }
        self.nodes[key].to_send.push((true, ch));
    }

    /// The connection to a primary is gone: its channels are not live; look for a
    /// successor (a failover) while the link retries.
    fn forget(&mut self, key: usize, _now: Instant) {
        let n = &mut self.nodes[key];
        tracing::warn!(node = ?n.addr, "cluster subscriber lost");
        n.probe_subscribed = false;
        n.probe_sent = None;
        n.probe_ok = false;
        n.to_send.clear();
        n.unsubscribing.clear();
        let channels: Vec<Arc<str>> = n.channels.iter().cloned().collect();
        for ch in channels {
            if !self.router.lost_one(&mut self.links, &ch) {
                self.unplace(&ch);
            }
        }
        self.topo.request();
    }

    fn lost(&mut self, key: usize, now: Instant) {
        self.nodes[key].link.disconnect(self.poll.registry(), now);
        self.forget(key, now);
    }

    /// The node serving `ch`'s slot (a connection is made to it if there is none yet).
    fn node_for(&mut self, ch: &str) -> Option<usize> {
        let addr = owner(self.topo.map()?, ch.as_bytes(), self.tls)?;
        Some(self.node_at(addr))
    }

    fn node_at(&mut self, addr: Addr) -> usize {
        if let Some((k, _)) = self.nodes.iter().find(|(_, n)| n.addr == addr) {
            return k;
        }
        let entry = self.nodes.vacant_entry();
        let key = entry.key();
        let url = self.topo.url_of(&addr.0, addr.1);
        entry.insert(Node {
            addr,
            link: Link::new(url, Token(FIRST + key), "cluster-reader"),
            primary: true,
            channels: HashSet::new(),
            unsubscribing: HashMap::new(),
            to_send: Vec::new(),
            probe: None,
            control: false,
            probe_subscribed: false,
            probe_sent: None,
            probe_ok: false,
            next_probe: Instant::now(),
        });
        key
    }

    /// Places `ch` on the primary serving its slot and subscribes it there if that
    /// connection is up (otherwise `connected` will).
    fn place(&mut self, ch: Arc<str>) {
        let Some(key) = self.node_for(&ch) else {
            self.unplaced.insert(ch);
            return;
        };
        self.unplaced.remove(&ch);
        self.placed.insert(ch.clone(), key);
        let n = &mut self.nodes[key];
        n.channels.insert(ch.clone());
        if n.link.is_up() {
            self.resubscribe(key, ch);
        }
    }

    /// Forgets where `ch` was placed (nobody wants it any more).
    fn unplace(&mut self, ch: &str) -> Option<usize> {
        self.unplaced.remove(ch);
        let key = self.placed.remove(ch)?;
        if let Some(n) = self.nodes.get_mut(key) {
            n.channels.remove(ch);
        }
        Some(key)
    }

    /// Sends a SUNSUBSCRIBE of `ch` on node `key` (if up), remembering that it is ours.
    fn unsubscribe_on(&mut self, key: usize, ch: Arc<str>) {
        let n = &mut self.nodes[key];
        if n.link.is_up() {
            *n.unsubscribing.entry(ch.clone()).or_default() += 1;
            n.to_send.push((false, ch));
        }
    }

    /// `ch` is no longer subscribed where it was placed (its slot moved, or the node
    /// said `-MOVED`): not live until subscribed on the new owner.
    fn displaced(&mut self, ch: &str) {
        let Some(key) = self.placed.remove(ch) else {
            return;
        };
        let Some(name) = self.nodes[key].channels.take(ch) else {
            return;
        };
        if self.router.lost_one(&mut self.links, &name) {
            self.unplaced.insert(name);
        }
        self.topo.request();
    }

    /// A new slot map: every primary gets a connection (and a probe), the control
    /// channel and every channel go to the primary serving their slot, and nodes that
    /// are no longer primaries and hold nothing are closed.
    fn apply_map(&mut self, map: &SlotMap, now: Instant) {
        let prims = primaries(map, self.tls);
        tracing::debug!(primaries = ?prims, "cluster slot map");
        for (_, n) in self.nodes.iter_mut() {
            n.primary = prims.contains(&n.addr);
            // A probe in flight may have gone to the previous owner: a fresh window.
            n.probe_sent = None;
        }
        for addr in &prims {
            let key = self.node_at(addr.clone());
            self.nodes[key].primary = true;
        }
        // Channels whose slot is now served elsewhere move.
        let moved: Vec<(Arc<str>, usize)> = self
            .placed
            .iter()
            .filter(|(ch, &key)| {
                owner(map, ch.as_bytes(), self.tls).as_ref() != Some(&self.nodes[key].addr)
            })
            .map(|(ch, &key)| (ch.clone(), key))
            .collect();
        for (ch, key) in moved {
            self.placed.remove(&ch);
            self.nodes[key].channels.remove(&ch);
            if self.nodes[key].link.is_up() {
                self.unsubscribe_on(key, ch.clone());
            }
            if self.router.lost_one(&mut self.links, &ch) {
                self.place(ch);
            }
        }
        let waiting: Vec<Arc<str>> = self.unplaced.iter().cloned().collect();
        for ch in waiting {
            if self.router.route(&ch).is_some_and(|r| r.shards != 0) {
                self.place(ch);
            } else {
                self.unplaced.remove(&ch);
            }
        }
        // The nodes' own channels: a probe per primary, the control channel on its owner.
        let control_owner = owner(map, CONTROL_CHANNEL.as_bytes(), self.tls);
        let keys: Vec<usize> = self.nodes.iter().map(|(k, _)| k).collect();
        for key in keys {
            let n = &self.nodes[key];
            let (probe, control) = if n.primary {
                let probe = channel_on(map, &n.addr, &self.probe_prefix, self.tls);
                (probe.map(Arc::from), control_owner.as_ref() == Some(&n.addr))
            } else {
                (None, false)
            };
            self.own_channels(key, probe, control);
            let n = &self.nodes[key];
            if !n.primary && n.channels.is_empty() {
                let mut n = self.nodes.remove(key);
                n.link.disconnect(self.poll.registry(), now);
            }
        }
    }

    /// Moves node `key`'s own channels (probe, control) to what the map says.
    fn own_channels(&mut self, key: usize, probe: Option<Arc<str>>, control: bool) {
        let n = &mut self.nodes[key];
        if n.probe != probe {
            let old = std::mem::replace(&mut n.probe, probe.clone());
            n.probe_subscribed = false;
            n.probe_sent = None;
            if n.link.is_up() {
                if let Some(old) = old {
                    self.unsubscribe_on(key, old);
                }
                if let Some(p) = probe {
                    self.nodes[key].to_send.push((true, p));
                }
            }
        }
        let n = &mut self.nodes[key];
        if n.control != control {
            n.control = control;
            if n.link.is_up() {
                if control {
                    n.to_send.push((true, Arc::from(CONTROL_CHANNEL)));
                } else {
                    self.unsubscribe_on(key, Arc::from(CONTROL_CHANNEL));
                }
            }
        }
    }

    fn drain_inbox(&mut self) {
        while let Some(cmd) = self.inbox.try_recv() {
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
                        match self.placed.get(&channel) {
                            // Still placed (an unsubscribe is on its way): subscribe again.
                            Some(&key) if self.nodes[key].link.is_up() => {
                                self.nodes[key].to_send.push((true, channel))
                            }
                            Some(_) => {}
                            None => self.place(channel),
                        }
                    }
                }
                BrokerCmd::Unsubscribe { channel, shard } => {
                    let wire = self.router.unsubscribe(&channel, shard);
                    if self.router.route(&channel).is_none_or(|r| r.shards == 0) {
                        self.owe_gap.remove(&channel);
                        if let Some(key) = self.unplace(&channel) {
                            if wire == Wire::Unsubscribe {
                                self.unsubscribe_on(key, channel);
                            }
                        }
                    }
                }
                BrokerCmd::Publish { .. } | BrokerCmd::History(_) => {}
            }
        }
    }

    /// Writes node `key`'s SSUBSCRIBE/SUNSUBSCRIBE of this turn in decision order; one
    /// command per run of one verb and one slot (Redis refuses a command whose channels
    /// span slots).
    fn write_subscriptions(&mut self, key: usize) {
        let n = &mut self.nodes[key];
        if !n.link.is_up() || n.to_send.is_empty() {
            return;
        }
        let to_send = std::mem::take(&mut n.to_send);
        let mut args: Vec<&[u8]> = Vec::new();
        for run in to_send.chunk_by(|a, b| {
            a.0 == b.0 && key_slot(a.1.as_bytes()) == key_slot(b.1.as_bytes())
        }) {
            let verb: &[u8] = if run[0].0 {
                b"SSUBSCRIBE"
            } else {
                b"SUNSUBSCRIBE"
            };
            for chunk in run.chunks(crate::config::TUNING.subscribe_batch) {
                args.clear();
                args.push(verb);
                args.extend(chunk.iter().map(|(_, c)| c.as_bytes()));
                resp::encode(&mut n.link.wbuf, &args);
            }
        }
    }

    fn read_messages(&mut self, key: usize, now: Instant) {
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
                            Ok(ch) => {
                                let (offset, data) = split_marked(payload);
                                self.router
                                    .dispatch(&mut self.links, ch, data, None, offset);
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
    fn on_error(&mut self, key: usize, e: &[u8]) {
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
        if n.probe.as_deref().is_some_and(|p| key_slot(p.as_bytes()) == r.slot) {
            n.probe_subscribed = false;
        }
        self.topo.request();
    }

    fn on_push(&mut self, key: usize, items: Vec<Value>) {
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
    fn probe(&mut self, key: usize, now: Instant) {
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
