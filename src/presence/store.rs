//! Presence in Redis: the key layout (docs/protocol.md, "Presence layout"), the pipelined
//! rounds that write it (one per batch of connects/disconnects, one per heartbeat for all
//! local users), queries that leave out entries of dead nodes, the sweep that removes
//! dead nodes' entries through their per-node hash, and the exact cleanup on shutdown.
//!
//! Keys:
//! - `connections:{user}` hash, field = connection id, value =
//!   `{"serverId":…,"socketId":…,"connectedAt":ms}`, TTL `ttl` refreshed each heartbeat;
//! - `fanout:node:{serverId}` liveness key, TTL 3 heartbeats, refreshed each heartbeat;
//! - `fanout:node:{serverId}:conns` hash, connection id → user, of every entry this node
//!   wrote (so its entries can be removed without scanning the keyspace);
//! - `fanout:nodes` set of server ids that registered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::local::{Entry, Local};
use crate::metrics::Metrics;
use crate::redis::blocking::{as_bytes, Pipe};
use crate::redis::resp::Value;
use crate::redis::BlockingRedis;

/// The set of registered node ids.
pub const NODES_KEY: &str = "fanout:nodes";
/// Removals kept for replay while Redis is down; past it the oldest are forgotten (own
/// stale entries are still never reported, see `query`).
/// See `config::Tuning`.
const MAX_REMOVALS: usize = crate::config::TUNING.presence_max_removals;
/// Fields per HSCAN page when removing a node's entries.
const SCAN_COUNT: &[u8] = b"1000";

pub fn user_key(user: &str) -> String {
    format!("connections:{user}")
}

pub fn live_key(server_id: &str) -> String {
    format!("fanout:node:{server_id}")
}

pub fn conns_key(server_id: &str) -> String {
    format!("fanout:node:{server_id}:conns")
}

/// A change to this node's entries.
pub enum Op {
    Open { user: Box<str>, entry: Entry },
    Close { user: Box<str>, cid: Box<str> },
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "serverId", borrow)]
    server_id: std::borrow::Cow<'a, str>,
}

/// An entry a query read: (user index, connection id, value, server id if readable).
type Found = (usize, Box<str>, Box<str>, Option<String>);

pub struct RedisStore {
    client: BlockingRedis,
    server_id: String,
    live_key: String,
    conns_key: String,
    /// Value of the liveness key.
    live_value: String,
    ttl: String,
    live_ms: String,
    conns_ms: String,
    /// Everything local must be rewritten (at start, after a failed round).
    resync: bool,
    removals: Vec<(Box<str>, Box<str>)>,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    pub fn new(
        client: BlockingRedis,
        server_id: &str,
        live_value: String,
        ttl_secs: u64,
        live_ms: u64,
        metrics: Arc<Metrics>,
    ) -> RedisStore {
        RedisStore {
            client,
            server_id: server_id.to_string(),
            live_key: live_key(server_id),
            conns_key: conns_key(server_id),
            live_value,
            ttl: ttl_secs.to_string(),
            live_ms: live_ms.to_string(),
            conns_ms: (ttl_secs * 1000 + live_ms).to_string(),
            resync: true,
            removals: Vec::new(),
            metrics,
        }
    }

    /// Runs one round, counting it (and its failure).
    fn round(&mut self, pipe: &Pipe) -> Option<Vec<Value>> {
        if pipe.is_empty() {
            return Some(Vec::new());
        }
        let m = &self.metrics.presence;
        match self.client.run(pipe) {
            Ok(v) => {
                m.redis_rounds.fetch_add(1, Ordering::Relaxed);
                m.redis_commands
                    .fetch_add(pipe.len() as u64, Ordering::Relaxed);
                m.redis_up.store(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotConnected {
                    tracing::warn!("presence: Redis round failed: {e}");
                    m.redis_errors.fetch_add(1, Ordering::Relaxed);
                }
                m.redis_up.store(0, Ordering::Relaxed);
                None
            }
        }
    }

    /// At start: removes what an earlier process with this server id left behind, then
    /// announces the node.
    pub fn start(&mut self, local: &Local) {
        self.remove_node(&self.server_id.clone(), true);
        self.heartbeat(local);
    }

    fn open_cmds(&self, pipe: &mut Pipe, user: &str, entry: &Entry) {
        let key = user_key(user);
        let value = entry.value(&self.server_id);
        pipe.cmd(&[
            b"HSET",
            key.as_bytes(),
            entry.cid.as_bytes(),
            value.as_bytes(),
        ]);
        pipe.cmd(&[b"EXPIRE", key.as_bytes(), self.ttl.as_bytes()]);
        pipe.cmd(&[
            b"HSET",
            self.conns_key.as_bytes(),
            entry.cid.as_bytes(),
            user.as_bytes(),
        ]);
    }

    fn close_cmds(&self, pipe: &mut Pipe, user: &str, cid: &str) {
        pipe.cmd(&[b"HDEL", user_key(user).as_bytes(), cid.as_bytes()]);
        pipe.cmd(&[b"HDEL", self.conns_key.as_bytes(), cid.as_bytes()]);
    }

    /// Writes a batch of changes in one round, in their order (`local` already reflects
    /// them). After a failure the next round rewrites every local entry and replays the
    /// removals that did not reach Redis.
    pub fn write(&mut self, ops: Vec<Op>, local: &Local) {
        let mut pipe = Pipe::default();
        for (user, cid) in &self.removals {
            self.close_cmds(&mut pipe, user, cid);
        }
        if self.resync {
            self.heartbeat_cmds(&mut pipe, local);
            for (user, entry) in local.iter() {
                self.open_cmds(&mut pipe, user, entry);
            }
        }
        let mut closes = Vec::new();
        for op in ops {
            match op {
                Op::Open { user, entry } => {
                    // In a resync every local entry is already written.
                    if !self.resync {
                        self.open_cmds(&mut pipe, &user, &entry);
                    }
                }
                Op::Close { user, cid } => {
                    self.close_cmds(&mut pipe, &user, &cid);
                    closes.push((user, cid));
                }
            }
        }
        if self.round(&pipe).is_some() {
            self.removals.clear();
            self.resync = false;
        } else {
            self.resync = true;
            self.removals.extend(closes);
            if self.removals.len() > MAX_REMOVALS {
                let excess = self.removals.len() - MAX_REMOVALS;
                self.removals.drain(..excess);
            }
        }
    }

    fn heartbeat_cmds(&self, pipe: &mut Pipe, local: &Local) {
        pipe.cmd(&[
            b"SET",
            self.live_key.as_bytes(),
            self.live_value.as_bytes(),
            b"PX",
            self.live_ms.as_bytes(),
        ]);
        pipe.cmd(&[b"SADD", NODES_KEY.as_bytes(), self.server_id.as_bytes()]);
        pipe.cmd(&[
            b"PEXPIRE",
            self.conns_key.as_bytes(),
            self.conns_ms.as_bytes(),
        ]);
        for user in local.users() {
            pipe.cmd(&[b"EXPIRE", user_key(user).as_bytes(), self.ttl.as_bytes()]);
        }
    }

    /// The periodic round: liveness key, node registration and the TTL of every local
    /// user's key in one pipeline, then a sweep of nodes whose liveness key expired.
    pub fn heartbeat(&mut self, local: &Local) {
        let started = Instant::now();
        if self.resync {
            self.write(Vec::new(), local); // includes the heartbeat commands
        } else {
            let mut pipe = Pipe::default();
            self.heartbeat_cmds(&mut pipe, local);
            self.round(&pipe);
        }
        let m = &self.metrics.presence;
        m.heartbeats.fetch_add(1, Ordering::Relaxed);
        m.heartbeat_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.sweep();
    }

    /// Finds registered nodes without a liveness key and removes their entries.
    fn sweep(&mut self) {
        let mut pipe = Pipe::default();
        pipe.cmd(&[b"SMEMBERS", NODES_KEY.as_bytes()]);
        let Some(reply) = self.round(&pipe) else {
            return;
        };
        let others: Vec<String> = match reply.first() {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|id| *id != self.server_id)
                .collect(),
            _ => return,
        };
        if others.is_empty() {
            return;
        }
        let alive = self.alive(&others);
        for id in others {
            if alive.get(&id).map(|a| !a.0 && a.1).unwrap_or(false) {
                tracing::info!(node = %id, "presence: removing entries of a dead node");
                self.remove_node(&id, false);
            }
        }
    }

    /// For each server id: (liveness key exists, registered in `fanout:nodes`).
    fn alive(&mut self, ids: &[String]) -> HashMap<String, (bool, bool)> {
        let mut pipe = Pipe::default();
        for id in ids {
            pipe.cmd(&[b"EXISTS", live_key(id).as_bytes()]);
            pipe.cmd(&[b"SISMEMBER", NODES_KEY.as_bytes(), id.as_bytes()]);
        }
        let Some(reply) = self.round(&pipe) else {
            // Unknown: count everyone as alive, remove nothing.
            return ids.iter().map(|id| (id.clone(), (true, false))).collect();
        };
        ids.iter()
            .zip(reply.chunks(2))
            .map(|(id, r)| {
                let exists = matches!(r.first(), Some(Value::Int(n)) if *n > 0);
                let member = matches!(r.get(1), Some(Value::Int(n)) if *n > 0);
                (id.clone(), (exists, member))
            })
            .collect()
    }

    /// Removes every entry listed in node `id`'s hash, page by page, then the hash and
    /// the registration. Stops if the node comes back to life (unless it is this node's
    /// own leftovers, at start).
    fn remove_node(&mut self, id: &str, own: bool) {
        let conns = conns_key(id);
        let live = live_key(id);
        let mut cursor: Vec<u8> = b"0".to_vec();
        loop {
            let mut pipe = Pipe::default();
            pipe.cmd(&[b"EXISTS", live.as_bytes()]);
            pipe.cmd(&[b"HSCAN", conns.as_bytes(), &cursor, b"COUNT", SCAN_COUNT]);
            let Some(reply) = self.round(&pipe) else {
                return;
            };
            if !own && matches!(reply.first(), Some(Value::Int(n)) if *n > 0) {
                return; // alive again
            }
            let Some(Value::Array(page)) = reply.get(1) else {
                return;
            };
            let (Some(next), Some(Value::Array(fields))) =
                (page.first().and_then(as_bytes), page.get(1))
            else {
                return;
            };
            cursor = next.to_vec();
            let mut del = Pipe::default();
            for pair in fields.chunks(2) {
                if let (Some(cid), Some(user)) = (
                    pair.first().and_then(as_bytes),
                    pair.get(1).and_then(as_bytes),
                ) {
                    let key = [b"connections:".as_slice(), user].concat();
                    del.cmd(&[b"HDEL", &key, cid]);
                }
            }
            let n = del.len() as u64;
            if self.round(&del).is_none() {
                return;
            }
            self.metrics
                .presence
                .stale_removed
                .fetch_add(n, Ordering::Relaxed);
            if cursor == b"0" {
                break;
            }
        }
        let mut pipe = Pipe::default();
        pipe.cmd(&[b"DEL", conns.as_bytes()]);
        if !own {
            pipe.cmd(&[b"SREM", NODES_KEY.as_bytes(), id.as_bytes()]);
        }
        self.round(&pipe);
    }

    /// The live connections of each user (raw JSON values), or `None` when Redis cannot
    /// answer. Entries of a node without a liveness key are left out (and removed when
    /// that node is a registered fanout node); entries with this node's id that are not
    /// in the local table are leftovers and are removed too.
    pub fn query(&mut self, users: &[&str], local: &Local) -> Option<Vec<Vec<Box<str>>>> {
        if self.resync {
            self.write(Vec::new(), local);
        }
        let mut pipe = Pipe::default();
        for user in users {
            pipe.cmd(&[b"HGETALL", user_key(user).as_bytes()]);
        }
        let reply = self.round(&pipe)?;
        let mut found: Vec<Found> = Vec::new();
        for (i, v) in reply.iter().enumerate() {
            let Value::Array(items) = v else { continue };
            for pair in items.chunks(2) {
                let (Some(cid), Some(value)) = (
                    pair.first().and_then(as_bytes),
                    pair.get(1).and_then(as_bytes),
                ) else {
                    continue;
                };
                let (Ok(cid), Ok(value)) = (std::str::from_utf8(cid), std::str::from_utf8(value))
                else {
                    continue;
                };
                let sid = serde_json::from_str::<Head<'_>>(value)
                    .ok()
                    .map(|h| h.server_id.into_owned());
                found.push((i, cid.into(), value.into(), sid));
            }
        }
        let others: Vec<String> = found
            .iter()
            .filter_map(|f| f.3.clone())
            .filter(|s| *s != self.server_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let alive = if others.is_empty() {
            HashMap::new()
        } else {
            self.alive(&others)
        };
        let mut out: Vec<Vec<Box<str>>> = vec![Vec::new(); users.len()];
        let mut stale = Pipe::default();
        for (i, cid, value, sid) in found {
            let Some(sid) = sid else {
                continue; // not an entry we can judge: leave it alone, do not report it
            };
            let (live, removable) = if sid == self.server_id {
                let live = local.contains(users[i], &cid);
                (live, !live)
            } else {
                let (exists, member) = alive.get(&sid).copied().unwrap_or((true, false));
                (exists, !exists && member)
            };
            if live {
                out[i].push(value);
            } else if removable {
                stale.cmd(&[b"HDEL", user_key(users[i]).as_bytes(), cid.as_bytes()]);
            }
        }
        if !stale.is_empty() {
            let n = stale.len() as u64;
            if self.round(&stale).is_some() {
                self.metrics
                    .presence
                    .stale_removed
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
        Some(out)
    }

    /// On shutdown: removes exactly this node's entries, its hash, liveness key and
    /// registration, in one round.
    pub fn shutdown(&mut self, local: &Local) {
        let mut pipe = Pipe::default();
        for (user, cid) in &self.removals {
            self.close_cmds(&mut pipe, user, cid);
        }
        for (user, entry) in local.iter() {
            pipe.cmd(&[b"HDEL", user_key(user).as_bytes(), entry.cid.as_bytes()]);
        }
        // One key per command: in a Redis Cluster the two keys are in different slots.
        pipe.cmd(&[b"DEL", self.conns_key.as_bytes()]);
        pipe.cmd(&[b"DEL", self.live_key.as_bytes()]);
        pipe.cmd(&[b"SREM", NODES_KEY.as_bytes(), self.server_id.as_bytes()]);
        if self.round(&pipe).is_none() {
            // One more try, e.g. after a connection that had just dropped.
            self.round(&pipe);
        }
        if self.resync && !self.client.is_up() {
            tracing::warn!(
                "presence: Redis unreachable at shutdown; entries expire with their TTL"
            );
        }
    }
}
