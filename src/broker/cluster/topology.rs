//! The slot map of a Redis Cluster as one broker thread learns it: a non-blocking
//! discovery connection that asks `CLUSTER SHARDS` (falling back to `CLUSTER SLOTS` on
//! a server that does not know it) of the seeds and then of every node it has heard
//! of, moving on to the next candidate when one fails or does not answer within a
//! second. Refreshes are asked for (a `-MOVED`, a failed primary, a migrated
//! subscription), rate limited, and made every few seconds regardless. The reader's and
//! the writer's topologies share what they learn (`Shared`): a map one of them read is
//! adopted by the other on its next turn, so both route by the same map within a loop
//! turn of each other. It owns no subscription and no publish; it never blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::redis::cluster::SlotMap;
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

/// No two refreshes start closer together than this.
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// A refresh is made this often even when nothing asked for one (a safety net: every
/// change that matters is seen at once through a `-MOVED`, a `sunsubscribe` or a
/// lost connection).
const EVERY: Duration = Duration::from_secs(30);
/// A node that has not answered within this long is given up for the next one.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Shards,
    Slots,
}

/// The newest map either thread read, with its version (locked only on a change).
#[derive(Default)]
pub struct Shared {
    version: AtomicU64,
    map: Mutex<Option<SlotMap>>,
}

pub struct Topology {
    token: Token,
    shared: Arc<Shared>,
    /// The version of `shared` this topology has seen.
    seen: u64,
    /// The seeds, then every node of the last map: where to ask, in turn.
    candidates: Vec<RedisUrl>,
    seeds: usize,
    next: usize,
    link: Option<Link>,
    /// The link got as far as connecting (a `Down` link after that was refused).
    tried: bool,
    /// The question in flight (or waiting for the link to come up), since when.
    asked: Option<(Ask, Instant, bool)>,
    want: bool,
    last: Option<Instant>,
    map: Option<SlotMap>,
}

impl Topology {
    pub fn new(seeds: Vec<RedisUrl>, token: Token, shared: Arc<Shared>) -> Topology {
        Topology {
            token,
            shared,
            seen: 0,
            seeds: seeds.len(),
            candidates: seeds,
            next: 0,
            link: None,
            tried: false,
            asked: None,
            want: true,
            last: None,
            map: None,
        }
    }

    /// The latest map, once one was read.
    pub fn map(&self) -> Option<&SlotMap> {
        self.map.as_ref()
    }

    /// The URL (credentials, TLS) of `host:port`, a node of the map.
    pub fn url_of(&self, host: &str, port: u16) -> RedisUrl {
        self.candidates[0].with_node(host, port)
    }

    /// Asks for a refresh (rate limited).
    pub fn request(&mut self) {
        self.want = true;
    }

    /// How long the owner may sleep before `turn` has something to do.
    pub fn timeout(&self, now: Instant) -> Duration {
        let mut t = Duration::from_millis(250);
        if let Some(link) = &self.link {
            if let Some(l) = link.timeout(now) {
                t = t.min(l);
            }
        }
        if self.want && self.asked.is_none() {
            let due = self.last.map_or(now, |l| l + MIN_INTERVAL);
            t = t.min(due.saturating_duration_since(now));
        }
        t
    }

    /// Moves discovery on (call every loop turn, `ready` when the poll reported its
    /// token). Returns a new map when one arrived.
    pub fn turn(&mut self, registry: &Registry, ready: bool, now: Instant) -> Option<SlotMap> {
        if self.shared.version.load(Ordering::Acquire) > self.seen {
            let (version, map) = {
                let guard = self.shared.map.lock().unwrap_or_else(|e| e.into_inner());
                (self.shared.version.load(Ordering::Acquire), guard.clone())
            };
            self.seen = version;
            if let Some(map) = map.filter(|m| self.map.as_ref() != Some(m)) {
                self.learn(&map);
                self.map = Some(map.clone());
                return Some(map);
            }
        }
        if self.last.is_some_and(|l| now >= l + EVERY) {
            self.want = true;
        }
        if self.want && self.asked.is_none() && self.last.is_none_or(|l| now >= l + MIN_INTERVAL) {
            self.want = false;
            self.last = Some(now);
            self.asked = Some((Ask::Shards, now, false));
            if self.link.is_none() {
                let url = self.candidates[self.next % self.candidates.len()].clone();
                self.link = Some(Link::new(url, self.token, "cluster-topology"));
            }
        }
        let link = self.link.as_mut()?;
        let mut ev = LinkEvent::Nothing;
        if ready {
            ev = link.on_ready(registry, now);
        }
        if ev == LinkEvent::Nothing {
            ev = link.maintain(registry, now);
        }
        let refused = link.is_down() && self.tried;
        self.tried |= !link.is_down();
        if ev == LinkEvent::Lost || (self.asked.is_some() && refused) {
            // Lost, or refused: ask the next node now rather than after a backoff.
            self.give_up(registry, now);
            return None;
        }
        if let Some((ask, since, false)) = self.asked {
            if link.is_up() {
                send(link, ask);
                self.asked = Some((ask, since, true));
            }
        }
        let answer = loop {
            let link = self.link.as_mut()?;
            match link.next_value() {
                Ok(None) => break None,
                Ok(Some(v)) => {
                    if let Some(found) = self.answered(v, now) {
                        break Some(found);
                    }
                }
                Err(_) => {
                    self.give_up(registry, now);
                    return None;
                }
            }
        };
        if let Some(link) = self.link.as_mut() {
            if link.is_up() && link.flush().is_err() {
                self.give_up(registry, now);
                return None;
            }
        }
        if answer.is_none()
            && self
                .asked
                .is_some_and(|(_, since, _)| now >= since + ANSWER_TIMEOUT)
        {
            self.give_up(registry, now);
        }
        answer
    }

    /// Reads one reply; a map that parses is the answer.
    fn answered(&mut self, v: Value, now: Instant) -> Option<SlotMap> {
        let (ask, _, _) = self.asked?;
        let link = self.link.as_mut()?;
        let host = link_host(&self.candidates, self.next);
        let map = match (&v, ask) {
            (Value::Error(_), Ask::Shards) => {
                // Before Redis 7: ask the older command.
                send(link, Ask::Slots);
                self.asked = Some((Ask::Slots, now, true));
                return None;
            }
            (_, Ask::Shards) => SlotMap::from_cluster_shards(&v, &host),
            (_, Ask::Slots) => SlotMap::from_cluster_slots(&v, &host),
        };
        self.asked = None;
        match map {
            Ok(map) if map.covered() > 0 => {
                self.learn(&map);
                self.map = Some(map.clone());
                {
                    let mut guard = self.shared.map.lock().unwrap_or_else(|e| e.into_inner());
                    *guard = Some(map.clone());
                    self.seen = self.shared.version.fetch_add(1, Ordering::AcqRel) + 1;
                }
                Some(map)
            }
            Ok(_) => {
                tracing::warn!("Redis Cluster node {host} serves no slot yet");
                self.next += 1;
                self.want = true;
                None
            }
            Err(e) => {
                tracing::warn!("Redis Cluster slot map from {host} unreadable: {e}");
                self.next += 1;
                self.want = true;
                None
            }
        }
    }

    /// The candidates become the seeds plus every node of `map`.
    fn learn(&mut self, map: &SlotMap) {
        self.candidates.truncate(self.seeds);
        let tls = self.candidates[0].tls.is_some();
        for r in map.ranges() {
            for n in std::iter::once(&r.primary).chain(&r.replicas) {
                if let Some(port) = n.port_for(tls) {
                    let url = self.candidates[0].with_node(&n.host, port);
                    if !self
                        .candidates
                        .iter()
                        .any(|c| c.host == url.host && c.port == url.port)
                    {
                        self.candidates.push(url);
                    }
                }
            }
        }
    }

    /// The node in use failed: drop its connection and ask the next one.
    fn give_up(&mut self, registry: &Registry, now: Instant) {
        if let Some(mut link) = self.link.take() {
            link.disconnect(registry, now);
        }
        self.tried = false;
        if self.asked.take().is_some() {
            // Ask the next one after `MIN_INTERVAL`: never a busy loop while every
            // node is out of reach.
            self.want = true;
            self.last = Some(now);
        }
        self.next = (self.next + 1) % self.candidates.len();
    }
}

fn send(link: &mut Link, ask: Ask) {
    let sub: &[u8] = match ask {
        Ask::Shards => b"SHARDS",
        Ask::Slots => b"SLOTS",
    };
    resp::encode(&mut link.wbuf, &[b"CLUSTER", sub]);
}

fn link_host(candidates: &[RedisUrl], next: usize) -> String {
    candidates[next % candidates.len()].host.clone()
}
