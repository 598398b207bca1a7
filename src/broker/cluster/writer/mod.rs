//! The cluster writer thread: one pipelined connection per primary. A publish goes to
//! the primary serving its channel's slot as a script that calls `SPUBLISH` with the
//! channel as its key (on a channel with history, the publish script: `XADD` +
//! `SPUBLISH` atomic in that slot), a history read to the same primary; each reply is
//! matched, in order, to what asked for it. Never a bare `SPUBLISH`: a replica runs
//! that itself and forwards it to its primary over the cluster bus, so after a failover
//! the demoted primary would pass on late what it still took while the new one
//! delivers later publishes first; a script with a key is refused by a replica
//! (`-MOVED`), so a message is only ever published by the primary by its own account.
//! While the cluster is down Redis refuses scripts with keys (`-CLUSTERDOWN`) but not
//! sharded pub/sub: a plain publish refused so is sent again as a bare `SPUBLISH`, in
//! its slot's order (`Fence::redo`), and plain publishes stay bare until the next map. A `-MOVED` refreshes the map and sends the command again to the node
//! it names, a `-ASK` sends it there once after `ASKING`. While a primary is out of
//! reach its channels' publishes are refused at once (`unavailable`), never queued
//! without bound. Never blocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use slab::Slab;

mod op;

use op::{Op, Pending};

use super::fence::Fence;
use super::plain;
use super::topology::{self, Topology};
use super::{primaries, Addr, FIRST, TOPOLOGY};
use crate::broker::history::{answer, Found};
use crate::broker::redis::history::{self as scripts, Scripts};
use crate::broker::{BrokerCmd, ShardLinks};
use crate::config::Config;
use crate::health::Health;
use crate::inbox::Inbox;
use crate::protocol::envelope::EnvelopeBuilder;
use crate::protocol::ErrorCode;
use crate::redis::cluster::{parse_redirect, RedirectKind};
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

const MAX_UNSENT: usize = crate::config::TUNING.max_unsent;
const REPLY_TIMEOUT: Duration = crate::config::TUNING.reply_timeout;
/// Redirections one command follows before it fails.
const MAX_REDIRECTS: u8 = 3;

struct Node {
    addr: Addr,
    link: Link,
    primary: bool,
    pending: VecDeque<(Pending, Instant)>,
}

pub struct Writer {
    poll: Poll,
    inbox: Inbox<BrokerCmd>,
    links: ShardLinks,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    config: Arc<Config>,
    topo: Topology,
    tls: bool,
    nodes: Slab<Node>,
    scripts: Scripts,
    /// The SHA1 of `plain::SCRIPT`.
    publish_sha: String,
    /// The cluster answered `-CLUSTERDOWN` since the last map: plain publishes go bare.
    bare: bool,
    envelope: EnvelopeBuilder,
    /// Keeps a slot's commands in order while its owner changes.
    fence: Fence<Op>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        inbox: Inbox<BrokerCmd>,
        seeds: Vec<RedisUrl>,
        shared: Arc<topology::Shared>,
        links: ShardLinks,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        config: Arc<Config>,
    ) -> Writer {
        Writer {
            poll,
            inbox,
            links,
            health,
            stop,
            config,
            tls: seeds[0].tls.is_some(),
            topo: Topology::new(seeds, TOPOLOGY, shared),
            nodes: Slab::new(),
            scripts: Scripts::cluster(),
            publish_sha: scripts::sha(plain::SCRIPT),
            bare: false,
            envelope: EnvelopeBuilder::default(),
            fence: Fence::new(super::super::redis::QUEUE),
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
                self.read_replies(key, now);
                let n = &mut self.nodes[key];
                crate::broker::redis::note_auth(&mut n.link, &self.health, &self.links.metrics);
            }
            self.drain_inbox(now);
            self.release_held(now);
            for &key in &keys {
                let Some(n) = self.nodes.get_mut(key) else {
                    continue;
                };
                if n.link.is_up() && n.link.flush().is_err() {
                    self.lost(key, now);
                }
                self.check_stuck(key, now);
            }
            self.update_health();
        }
    }

    /// Publishes are taken while the map is known and some primary is reachable (a
    /// publish to one that is not is refused on its own).
    fn update_health(&mut self) {
        let mut any = false;
        let mut all = true;
        for (_, n) in self.nodes.iter().filter(|(_, n)| n.primary) {
            any |= n.link.is_up();
            all &= n.link.is_up();
        }
        if !all {
            self.topo.request();
        }
        let ok = self.topo.map().is_some() && any;
        self.health.publisher_ok.store(ok, Ordering::Relaxed);
    }

    fn on_link_event(&mut self, key: usize, ev: LinkEvent, now: Instant) {
        match ev {
            LinkEvent::Connected => {
                let n = &mut self.nodes[key];
                if n.link.was_up {
                    self.links
                        .metrics
                        .broker_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                n.link.was_up = true;
                self.load_scripts(key, now);
            }
            LinkEvent::Lost => self.fail_pending(key),
            LinkEvent::Nothing => {}
        }
    }

    fn lost(&mut self, key: usize, now: Instant) {
        self.nodes[key].link.disconnect(self.poll.registry(), now);
        self.fail_pending(key);
    }

    /// A primary's connection is gone: what was buffered or in flight on it failed
    /// (answered `unavailable` or counted); look for its successor.
    fn fail_pending(&mut self, key: usize) {
        let pending = std::mem::take(&mut self.nodes[key].pending);
        for (p, _) in pending {
            if let Pending::Op(op, ..) = p {
                self.fence.answered(op.slot(), key);
                self.fail(op);
            }
        }
        self.topo.request();
    }

    /// `SCRIPT LOAD` of the scripts publishes use (a new connection, a `NOSCRIPT`).
    fn load_scripts(&mut self, key: usize, now: Instant) {
        let n = &mut self.nodes[key];
        plain::encode_load(&mut n.link.wbuf);
        n.pending.push_back((Pending::Ignore, now));
        if self.config.namespaces.any_history() {
            scripts::encode_load_cluster(&mut n.link.wbuf);
            n.pending.push_back((Pending::Ignore, now));
            n.pending.push_back((Pending::Ignore, now));
        }
    }

    fn fail(&mut self, op: Op) {
        match op {
            Op::Publish { ack: Some(ack), .. } => self.links.ack(ack, Err(ErrorCode::Unavailable)),
            Op::Publish { channel, .. } => {
                if !is_probe(&channel) {
                    self.links
                        .metrics
                        .publish_failed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Op::Read(read) => answer(&self.links, &mut self.envelope, *read, Err(())),
        }
    }

    fn apply_map(&mut self, map: &crate::redis::cluster::SlotMap, now: Instant) {
        self.bare = false;
        let prims = primaries(map, self.tls);
        for (_, n) in self.nodes.iter_mut() {
            n.primary = prims.contains(&n.addr);
        }
        for addr in prims {
            let key = self.node_at(addr);
            self.nodes[key].primary = true;
        }
        let gone: Vec<usize> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.primary && n.pending.is_empty())
            .map(|(k, _)| k)
            .collect();
        for key in gone {
            let mut n = self.nodes.remove(key);
            n.link.disconnect(self.poll.registry(), now);
        }
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
            link: Link::new(url, Token(FIRST + key), "cluster-writer"),
            primary: false,
            pending: VecDeque::new(),
        });
        key
    }

    fn read_replies(&mut self, key: usize, now: Instant) {
        loop {
            let n = &mut self.nodes[key];
            match n.link.next_value() {
                Ok(None) => return,
                Ok(Some(value)) => {
                    let Some((pending, _)) = n.pending.pop_front() else {
                        tracing::warn!("Redis reply without a request: {value:?}");
                        continue;
                    };
                    if let Pending::Op(op, tries, bare) = pending {
                        self.fence.answered(op.slot(), key);
                        self.on_reply(key, op, (tries, bare), value, now);
                    }
                }
                Err(e) => {
                    tracing::warn!("bad reply from Redis ({}): reconnecting", e.0);
                    self.lost(key, now);
                    return;
                }
            }
        }
    }

    /// `sent`: the redirections followed, and whether it went as a bare `SPUBLISH`.
    fn on_reply(&mut self, key: usize, op: Op, sent: (u8, bool), value: Value, now: Instant) {
        let (tries, bare) = sent;
        if let Value::Error(e) = &value {
            if let Some(r) = parse_redirect(e) {
                self.topo.request();
                let host = if r.host.is_empty() {
                    self.nodes[key].addr.0.clone()
                } else {
                    r.host
                };
                let target = self.node_at((host, r.port));
                if tries >= MAX_REDIRECTS || !self.nodes[target].link.is_up() {
                    self.fail(op);
                } else {
                    let n = &mut self.nodes[target];
                    if r.kind == RedirectKind::Ask {
                        resp::encode(&mut n.link.wbuf, &[b"ASKING"]);
                        n.pending.push_back((Pending::Ignore, now));
                    }
                    self.encode(target, op, tries + 1, now);
                }
                return;
            }
            if e.starts_with(b"NOSCRIPT") {
                self.load_scripts(key, now);
            }
            if e.starts_with(b"CLUSTERDOWN") && !bare && !op.has_history(&self.config.namespaces) {
                self.bare = true;
                if let Err(op) = self.fence.redo(op.slot(), op) {
                    self.fail(op);
                }
                return;
            }
        } else if matches!(op, Op::Publish { .. }) {
            for late in self.fence.overtaken(op.slot()) {
                self.fail(late);
            }
        }
        match op {
            Op::Publish { ack, channel, .. } => {
                let result = match value {
                    Value::Error(e) => {
                        tracing::warn!("SPUBLISH refused: {}", String::from_utf8_lossy(&e));
                        Err(ErrorCode::Unavailable)
                    }
                    // The history script answers the message's offset.
                    other => Ok(crate::broker::redis::history::decode_published(&other)),
                };
                match ack {
                    Some(ack) => self.links.ack(ack, result),
                    None if result.is_err() && !is_probe(&channel) => {
                        self.links
                            .metrics
                            .publish_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
            Op::Read(read) => {
                let found: Result<Found, ()> = match value {
                    Value::Error(e) => {
                        tracing::warn!("history read refused: {}", String::from_utf8_lossy(&e));
                        Err(())
                    }
                    other => scripts::decode_read(other).ok_or(()),
                };
                answer(&self.links, &mut self.envelope, *read, found);
            }
        }
    }

    /// Whether `op` is a publish through the history script (or a history read).
    /// Writes `op` into node `key`'s pipeline.
    fn encode(&mut self, key: usize, op: Op, tries: u8, now: Instant) {
        let n = &mut self.nodes[key];
        let sha = (!self.bare).then_some(self.publish_sha.as_str());
        let bare = op.encode(
            &mut n.link.wbuf,
            &self.scripts,
            sha,
            &self.config.namespaces,
        );
        self.fence.sent(op.slot(), key);
        n.pending.push_back((Pending::Op(op, tries, bare), now));
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Some(cmd) = self.inbox.try_recv() {
            let op = match cmd {
                BrokerCmd::Publish {
                    channel,
                    payload,
                    ack,
                } => Op::Publish {
                    channel,
                    payload,
                    ack,
                },
                BrokerCmd::History(read) => Op::Read(read),
                _ => continue,
            };
            let slot = op.slot();
            match self.owner_of(slot) {
                Some(key) if self.fence.must_wait(slot, key) => {
                    if let Err(op) = self.fence.hold(slot, op) {
                        self.fail(op);
                    }
                }
                Some(key) if self.writable(key) => self.encode(key, op, 0, now),
                _ => self.fail(op),
            }
        }
    }

    /// The node key of the primary serving `slot`, as far as the map says.
    fn owner_of(&self, slot: u16) -> Option<usize> {
        let node = self.topo.map()?.primary(slot)?;
        let addr = (node.host.clone(), node.port_for(self.tls)?);
        self.nodes
            .iter()
            .find(|(_, n)| n.addr == addr)
            .map(|(k, _)| k)
    }

    /// Whether node `key` takes commands now: connected, its unsent bytes bounded.
    fn writable(&self, key: usize) -> bool {
        let n = &self.nodes[key];
        n.link.is_up() && n.link.wbuf.len() <= MAX_UNSENT
    }

    /// Sends the commands held for a slot once its earlier ones are all answered by
    /// (or sent again to) its owner; refuses them if the owner is gone.
    fn release_held(&mut self, now: Instant) {
        for slot in self.fence.held_slots() {
            let owner = self.owner_of(slot);
            let Some(held) = self.fence.release(slot, owner) else {
                continue;
            };
            for op in held {
                match owner {
                    Some(key) if self.writable(key) => self.encode(key, op, 0, now),
                    _ => self.fail(op),
                }
            }
        }
    }

    fn check_stuck(&mut self, key: usize, now: Instant) {
        if let Some((_, sent)) = self.nodes[key].pending.front() {
            if now.duration_since(*sent) > REPLY_TIMEOUT {
                tracing::warn!(
                    node = ?self.nodes[key].addr,
                    "Redis did not answer a command within {REPLY_TIMEOUT:?}: reconnecting"
                );
                self.lost(key, now);
            }
        }
    }
}

/// The node's own probe publishes are not client publishes.
fn is_probe(channel: &str) -> bool {
    channel.starts_with(crate::protocol::channel::PROBE_PREFIX)
}
