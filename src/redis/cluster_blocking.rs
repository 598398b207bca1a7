//! The presence thread's Redis Cluster client: blocking, like `blocking::Client`, with
//! one connection per primary. A `Pipe` is split by the slot of each command's key
//! (every presence command names one key), each part pipelined to the primary serving
//! it, and the replies put back in the pipe's order; a `-MOVED` refreshes the slot map
//! and sends that command again to the node it names, a `-ASK` sends it there once
//! after `ASKING`. The map is read from the seeds (`CLUSTER SHARDS`, else `CLUSTER
//! SLOTS`) when first needed and after any failure. It decides nothing about what is
//! stored.

use std::collections::HashMap;
use std::io::{self, ErrorKind};

use super::blocking::{Client, Pipe};
use super::cluster::{key_slot, parse_redirect, RedirectKind, SlotMap};
use super::resp::Value;
use super::RedisUrl;

/// Redirections one command follows before its reply is the error itself.
const MAX_REDIRECTS: usize = 3;

pub struct ClusterClient {
    seeds: Vec<RedisUrl>,
    map: Option<SlotMap>,
    nodes: HashMap<(String, u16), Client>,
    next_seed: usize,
}

impl ClusterClient {
    pub fn new(seeds: Vec<RedisUrl>) -> ClusterClient {
        ClusterClient {
            seeds,
            map: None,
            nodes: HashMap::new(),
            next_seed: 0,
        }
    }

    /// The map is known and every primary's connection is up.
    pub fn is_up(&self) -> bool {
        self.map.is_some() && !self.nodes.is_empty() && self.nodes.values().all(Client::is_up)
    }

    fn tls(&self) -> bool {
        self.seeds[0].tls.is_some()
    }

    fn client(&mut self, addr: &(String, u16)) -> &mut Client {
        let url = self.seeds[0].with_node(&addr.0, addr.1);
        self.nodes
            .entry(addr.clone())
            .or_insert_with(|| Client::new(url))
    }

    /// Reads the slot map from the seeds, then the nodes we know, in turn.
    fn refresh(&mut self) -> io::Result<()> {
        let mut candidates: Vec<(String, u16)> = self
            .seeds
            .iter()
            .map(|u| (u.host.clone(), u.port))
            .collect();
        candidates.extend(self.nodes.keys().cloned());
        let mut last = io::Error::from(ErrorKind::NotConnected);
        for i in 0..candidates.len() {
            let addr = candidates[(self.next_seed + i) % candidates.len()].clone();
            let client = self.client(&addr);
            for sub in [&b"SHARDS"[..], b"SLOTS"] {
                let mut pipe = Pipe::default();
                pipe.cmd(&[b"CLUSTER", sub]);
                let reply = match client.run(&pipe) {
                    Ok(mut v) if !v.is_empty() => v.swap_remove(0),
                    Ok(_) => continue,
                    Err(e) => {
                        last = e;
                        break;
                    }
                };
                if matches!(reply, Value::Error(_)) {
                    continue;
                }
                let map = if sub == b"SHARDS" {
                    SlotMap::from_cluster_shards(&reply, &addr.0)
                } else {
                    SlotMap::from_cluster_slots(&reply, &addr.0)
                };
                match map {
                    Ok(map) if map.covered() > 0 => {
                        self.map = Some(map);
                        self.next_seed = (self.next_seed + i) % candidates.len();
                        return Ok(());
                    }
                    Ok(_) | Err(_) => break,
                }
            }
        }
        self.next_seed += 1;
        Err(last)
    }

    fn owner(&self, key: Option<&[u8]>) -> Option<(String, u16)> {
        let map = self.map.as_ref()?;
        let node = map.primary(key_slot(key.unwrap_or_default()))?;
        Some((node.host.clone(), node.port_for(self.tls())?))
    }

    /// Sends every command of `pipe` and returns their replies in its order. An I/O
    /// error on any node fails the whole round (and the map is read again next time).
    pub fn run(&mut self, pipe: &Pipe) -> io::Result<Vec<Value>> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        if self.map.is_none() {
            self.refresh()?;
        }
        let mut parts: Vec<((String, u16), Pipe, Vec<usize>)> = Vec::new();
        for i in 0..pipe.len() {
            let (_, key) = pipe.command(i);
            let Some(addr) = self.owner(key) else {
                self.map = None;
                return Err(io::Error::new(ErrorKind::NotConnected, "slot not served"));
            };
            let at = match parts.iter().position(|p| p.0 == addr) {
                Some(at) => at,
                None => {
                    parts.push((addr, Pipe::default(), Vec::new()));
                    parts.len() - 1
                }
            };
            parts[at].1.copy(pipe, i);
            parts[at].2.push(i);
        }
        let mut out: Vec<Option<Value>> = (0..pipe.len()).map(|_| None).collect();
        for (addr, part, index) in &parts {
            let replies = self
                .client(addr)
                .run(part)
                .inspect_err(|_| self.map = None)?;
            for (v, &i) in replies.into_iter().zip(index) {
                out[i] = Some(v);
            }
        }
        for (i, slot) in out.iter_mut().enumerate() {
            let mut tries = 0;
            while let Some(Value::Error(e)) = slot.as_ref() {
                let Some(r) = parse_redirect(e) else {
                    break;
                };
                if tries == MAX_REDIRECTS {
                    break;
                }
                tries += 1;
                if r.kind == RedirectKind::Moved {
                    self.map = None;
                }
                let mut again = Pipe::default();
                if r.kind == RedirectKind::Ask {
                    again.cmd(&[b"ASKING"]);
                }
                again.copy(pipe, i);
                let host = if r.host.is_empty() {
                    self.seeds[0].host.clone()
                } else {
                    r.host
                };
                let mut replies = self.client(&(host, r.port)).run(&again)?;
                *slot = replies.pop();
            }
        }
        Ok(out.into_iter().map(|v| v.unwrap_or(Value::Nil)).collect())
    }
}
