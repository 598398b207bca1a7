//! The cluster reader thread: one `SSUBSCRIBE` connection per primary, the node's
//! `Router` (reference counting and `subscribed` after Redis confirmed, as in single-Redis
//! mode), a probe per primary (a channel whose slot that primary serves, published
//! through the writer every second), and the nodes' control channel on its slot's
//! primary. A channel is subscribed on the primary that serves its slot; a lost
//! primary connection, a `sunsubscribe` Redis sent on its own (the slot migrated) or a
//! `-MOVED` refreshes the slot map, and every affected channel is subscribed again on
//! its owner, its subscribers told `gap` (history channels repair from history). A node
//! that said it gave a slot up is not given that slot's channels again by a map that
//! still names it (`ousted`). It never blocks on a shard or on Redis.

mod ousted;
mod place;
mod push;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use slab::Slab;

use super::topology::{self, Topology};
use super::{Addr, TOPOLOGY};
use crate::broker::router::Wire;
use crate::broker::{BrokerCmd, Router, ShardLinks};
use crate::health::Health;
use crate::inbox::{Inbox, InboxSender};
use crate::protocol::channel::CONTROL_CHANNEL;
use crate::protocol::channel::PROBE_PREFIX;
use crate::redis::cluster::key_slot;
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp;
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
    /// Slots nodes gave up: not placed there again until the map names another owner.
    ousted: ousted::Ousted,
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
            ousted: ousted::Ousted::default(),
            probe_prefix: format!("{PROBE_PREFIX}{server_id}:{}:", std::process::id()),
            probe_seq: 0,
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let links = self.nodes.iter().map(|(_, n)| &n.link);
            let (topo_ready, ready) =
                super::wait(&mut self.poll, &mut events, &self.inbox, &self.topo, links);
            let now = Instant::now();
            for key in ready {
                if let Some(n) = self.nodes.get_mut(key) {
                    let ev = n.link.on_ready(self.poll.registry(), now);
                    self.on_link_event(key, ev, now);
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
    pub(super) fn resubscribe(&mut self, key: usize, ch: Arc<str>) {
        self.router.resubscribing(&ch);
        if self.router.route(&ch).is_some_and(|r| r.was_live) {
            self.owe_gap.insert(ch.clone());
        }
        self.nodes[key].to_send.push((true, ch));
    }

    /// The connection to a primary is gone: its channels are not live; look for a
    /// successor (a failover) while the link retries.
    pub(super) fn forget(&mut self, key: usize, _now: Instant) {
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

    pub(super) fn lost(&mut self, key: usize, now: Instant) {
        self.nodes[key].link.disconnect(self.poll.registry(), now);
        self.forget(key, now);
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
        for run in to_send
            .chunk_by(|a, b| a.0 == b.0 && key_slot(a.1.as_bytes()) == key_slot(b.1.as_bytes()))
        {
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
}
