//! Where each channel is subscribed: on the primary serving its slot. Placing a
//! channel, forgetting it, moving it when its slot moved (a `sunsubscribe` Redis sent on
//! its own, a `-MOVED`) and applying a new slot map (every primary gets a connection, a
//! probe and, on its owner, the control channel). State changes only: the SSUBSCRIBEs
//! and SUNSUBSCRIBEs are queued for the reader's loop to write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use mio::Token;

use super::{Node, Reader};
use crate::broker::cluster::{channel_on, owner, primaries, Addr, FIRST};
use crate::protocol::channel::CONTROL_CHANNEL;
use crate::redis::cluster::SlotMap;
use crate::redis::link::Link;

impl Reader {
    /// The node serving `ch`'s slot (a connection is made to it if there is none yet).
    /// None while the map still names a node that gave the slot up (`ousted`).
    pub(super) fn node_for(&mut self, ch: &str) -> Option<usize> {
        let addr = owner(self.topo.map()?, ch.as_bytes(), self.tls)?;
        if self.ousted.refuses(ch, &addr, Instant::now()) {
            self.topo.request();
            return None;
        }
        Some(self.node_at(addr))
    }

    pub(super) fn node_at(&mut self, addr: Addr) -> usize {
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
    pub(super) fn place(&mut self, ch: Arc<str>) {
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
    pub(super) fn unplace(&mut self, ch: &str) -> Option<usize> {
        self.unplaced.remove(ch);
        let key = self.placed.remove(ch)?;
        if let Some(n) = self.nodes.get_mut(key) {
            n.channels.remove(ch);
        }
        Some(key)
    }

    /// Sends a SUNSUBSCRIBE of `ch` on node `key` (if up), remembering that it is ours.
    pub(super) fn unsubscribe_on(&mut self, key: usize, ch: Arc<str>) {
        let n = &mut self.nodes[key];
        if n.link.is_up() {
            *n.unsubscribing.entry(ch.clone()).or_default() += 1;
            n.to_send.push((false, ch));
        }
    }

    /// `ch` is no longer subscribed where it was placed (its slot moved, or the node
    /// said `-MOVED`): not live until subscribed on the new owner.
    pub(super) fn displaced(&mut self, ch: &str) {
        let Some(key) = self.placed.remove(ch) else {
            return;
        };
        let Some(name) = self.nodes[key].channels.take(ch) else {
            return;
        };
        self.ousted.note(ch, &self.nodes[key].addr, Instant::now());
        if self.router.lost_one(&mut self.links, &name) {
            self.unplaced.insert(name);
        }
        self.topo.request();
    }

    /// A new slot map: every primary gets a connection (and a probe), the control
    /// channel and every channel go to the primary serving their slot, and nodes that
    /// are no longer primaries and hold nothing are closed.
    pub(super) fn apply_map(&mut self, map: &SlotMap, now: Instant) {
        let prims = primaries(map, self.tls);
        tracing::debug!(primaries = ?prims, "cluster slot map");
        self.ousted.caught_up(map, self.tls);
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
        let control_owner = owner(map, CONTROL_CHANNEL.as_bytes(), self.tls)
            .filter(|a| !self.ousted.refuses(CONTROL_CHANNEL, a, now));
        let keys: Vec<usize> = self.nodes.iter().map(|(k, _)| k).collect();
        for key in keys {
            let n = &self.nodes[key];
            let (probe, control) = if n.primary {
                let probe = channel_on(map, &n.addr, &self.probe_prefix, self.tls);
                (
                    probe.map(Arc::from),
                    control_owner.as_ref() == Some(&n.addr),
                )
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
    pub(super) fn own_channels(&mut self, key: usize, probe: Option<Arc<str>>, control: bool) {
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
}
