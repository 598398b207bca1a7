//! Redis Cluster groundwork, pure: the slot of a key (CRC16-XMODEM mod 16384 with the
//! `{hash tag}` rule of the Redis Cluster spec), the slot map read from a `CLUSTER SHARDS`
//! or `CLUSTER SLOTS` reply (slot ranges → primary and replicas), and `-MOVED` / `-ASK`
//! redirections. It never does I/O and never panics on what a server sends: a reply it
//! cannot read is an `Err` naming what was wrong.

use super::resp::Value;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-CCITT/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses it.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: the text between the first `{` and the first `}`
/// after it, if that is not empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key` (for a sharded pub/sub channel: the slot of the channel name).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// One cluster node as a client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    /// The plain-TCP port (`None`: the node has only a TLS port).
    pub port: Option<u16>,
    /// The TLS port, when the node has one (`CLUSTER SHARDS` only).
    pub tls_port: Option<u16>,
    pub id: Option<String>,
}

impl Node {
    /// The port to dial: the TLS port for a TLS client when there is one.
    pub fn port_for(&self, tls: bool) -> Option<u16> {
        if tls {
            self.tls_port.or(self.port)
        } else {
            self.port
        }
    }
}

/// Slots `start..=end`, served by `primary` (and replicated by `replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: Node,
    pub replicas: Vec<Node>,
}

/// Which node serves which slot: ranges sorted by first slot, never overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    ranges: Vec<SlotRange>,
}

/// A reply that is not a valid slot map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError(pub String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

fn err<T>(what: impl Into<String>) -> Result<T, ClusterError> {
    Err(ClusterError(what.into()))
}

impl SlotMap {
    /// A map of `ranges`; overlapping ranges or slots past 16383 are an error.
    pub fn new(mut ranges: Vec<SlotRange>) -> Result<SlotMap, ClusterError> {
        ranges.sort_by_key(|r| r.start);
        for r in &ranges {
            if r.start > r.end || r.end >= SLOTS {
                return err(format!("bad slot range {}-{}", r.start, r.end));
            }
        }
        for pair in ranges.windows(2) {
            if pair[1].start <= pair[0].end {
                return err(format!(
                    "slot ranges {}-{} and {}-{} overlap",
                    pair[0].start, pair[0].end, pair[1].start, pair[1].end
                ));
            }
        }
        Ok(SlotMap { ranges })
    }

    pub fn ranges(&self) -> &[SlotRange] {
        &self.ranges
    }

    /// The range that holds `slot`.
    pub fn range(&self, slot: u16) -> Option<&SlotRange> {
        let i = self.ranges.partition_point(|r| r.end < slot);
        self.ranges.get(i).filter(|r| r.start <= slot)
    }

    /// The primary serving `slot`, if any does.
    pub fn primary(&self, slot: u16) -> Option<&Node> {
        self.range(slot).map(|r| &r.primary)
    }

    /// Slots served by some primary.
    pub fn covered(&self) -> u32 {
        self.ranges
            .iter()
            .map(|r| u32::from(r.end - r.start) + 1)
            .sum()
    }

    /// Every slot is served (`cluster_state:ok` needs it with the default config).
    pub fn is_complete(&self) -> bool {
        self.covered() == u32::from(SLOTS)
    }

    /// The distinct primaries, in slot order of their first range.
    pub fn primaries(&self) -> Vec<&Node> {
        let mut out: Vec<&Node> = Vec::new();
        for r in &self.ranges {
            if !out.iter().any(|n| same_node(n, &r.primary)) {
                out.push(&r.primary);
            }
        }
        out
    }

    /// Reads a `CLUSTER SLOTS` reply. A node announced with an empty or `?` host is
    /// reached at `asked_host`, the host the command was sent to (as the spec says).
    pub fn from_cluster_slots(reply: &Value, asked_host: &str) -> Result<SlotMap, ClusterError> {
        let Value::Array(items) = reply else {
            return err("CLUSTER SLOTS: not an array");
        };
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(f) = item else {
                return err("CLUSTER SLOTS: an entry is not an array");
            };
            let (Some(start), Some(end), Some(primary)) = (f.first(), f.get(1), f.get(2)) else {
                return err("CLUSTER SLOTS: an entry has fewer than 3 fields");
            };
            let node = |v: &Value| -> Result<Node, ClusterError> {
                let Value::Array(n) = v else {
                    return err("CLUSTER SLOTS: a node is not an array");
                };
                let host = n.first().and_then(text).unwrap_or_default();
                let port = n.get(1).and_then(int).and_then(to_port);
                let Some(port) = port else {
                    return err("CLUSTER SLOTS: a node has no valid port");
                };
                Ok(Node {
                    host: endpoint(&host, asked_host),
                    port: Some(port),
                    tls_port: None,
                    id: n.get(2).and_then(text),
                })
            };
            ranges.push(SlotRange {
                start: slot(start)?,
                end: slot(end)?,
                primary: node(primary)?,
                replicas: f[3..].iter().map(node).collect::<Result<_, _>>()?,
            });
        }
        SlotMap::new(ranges)
    }

    /// Reads a `CLUSTER SHARDS` reply (Redis 7). The primary of a shard is its node with
    /// role `master` (one that is not `failed` when there are several); a shard with no
    /// slots is skipped; its slots may come as several ranges.
    pub fn from_cluster_shards(reply: &Value, asked_host: &str) -> Result<SlotMap, ClusterError> {
        let Value::Array(shards) = reply else {
            return err("CLUSTER SHARDS: not an array");
        };
        let mut ranges = Vec::new();
        for shard in shards {
            let slots = match field(shard, "slots")? {
                Some(Value::Array(s)) => s,
                Some(_) => return err("CLUSTER SHARDS: slots is not an array"),
                None => return err("CLUSTER SHARDS: a shard has no slots field"),
            };
            if slots.is_empty() {
                continue;
            }
            if slots.len() % 2 != 0 {
                return err("CLUSTER SHARDS: an odd number of slot bounds");
            }
            let Some(Value::Array(nodes)) = field(shard, "nodes")? else {
                return err("CLUSTER SHARDS: a shard has no nodes array");
            };
            let mut primary: Option<(Node, bool)> = None;
            let mut replicas = Vec::new();
            for n in nodes {
                let role = field(n, "role")?.and_then(text).unwrap_or_default();
                let failed = field(n, "health")?.and_then(text).as_deref() == Some("failed");
                let node = shard_node(n, asked_host)?;
                if role == "master" {
                    // A failed primary still listed beside its successor loses.
                    if primary.as_ref().is_none_or(|(_, f)| *f && !failed) {
                        primary = Some((node, failed));
                    }
                } else {
                    replicas.push(node);
                }
            }
            let Some((primary, _)) = primary else {
                return err("CLUSTER SHARDS: a shard with slots has no master");
            };
            for pair in slots.chunks(2) {
                ranges.push(SlotRange {
                    start: slot(&pair[0])?,
                    end: slot(&pair[1])?,
                    primary: primary.clone(),
                    replicas: replicas.clone(),
                });
            }
        }
        SlotMap::new(ranges)
    }
}

fn same_node(a: &Node, b: &Node) -> bool {
    match (&a.id, &b.id) {
        (Some(x), Some(y)) => x == y,
        _ => a.host == b.host && a.port == b.port && a.tls_port == b.tls_port,
    }
}

/// A node of `CLUSTER SHARDS`: `endpoint` (the preferred one), else `ip`.
fn shard_node(n: &Value, asked_host: &str) -> Result<Node, ClusterError> {
    let endpoint_text = field(n, "endpoint")?.and_then(text).unwrap_or_default();
    let ip = field(n, "ip")?.and_then(text).unwrap_or_default();
    let host = if endpoint_text.is_empty() || endpoint_text == "?" {
        ip
    } else {
        endpoint_text
    };
    let port = field(n, "port")?.and_then(int).and_then(to_port);
    let tls_port = field(n, "tls-port")?.and_then(int).and_then(to_port);
    if port.is_none() && tls_port.is_none() {
        return err("CLUSTER SHARDS: a node has no port");
    }
    Ok(Node {
        host: endpoint(&host, asked_host),
        port,
        tls_port,
        id: field(n, "id")?.and_then(text),
    })
}

/// `host`, or `asked_host` when the server does not know its own endpoint.
fn endpoint(host: &str, asked_host: &str) -> String {
    if host.is_empty() || host == "?" {
        asked_host.to_string()
    } else {
        host.to_string()
    }
}

/// The value under `name` in a RESP2 map (a flat array of name, value pairs).
fn field<'a>(map: &'a Value, name: &str) -> Result<Option<&'a Value>, ClusterError> {
    let Value::Array(kv) = map else {
        return err(format!("expected a map holding {name}, got {map:?}"));
    };
    Ok(kv
        .chunks(2)
        .find(|p| p.len() == 2 && text(&p[0]).as_deref() == Some(name))
        .map(|p| &p[1]))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bulk(b) | Value::Simple(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    }
}

/// An integer, sent as one or as a string of digits.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn to_port(i: i64) -> Option<u16> {
    u16::try_from(i).ok().filter(|&p| p != 0)
}

fn slot(v: &Value) -> Result<u16, ClusterError> {
    match int(v).and_then(|i| u16::try_from(i).ok()) {
        Some(s) if s < SLOTS => Ok(s),
        _ => err(format!("bad slot number {v:?}")),
    }
}

/// `-MOVED` (the slot has a new owner: refresh the map) or `-ASK` (ask that node once,
/// after `ASKING`: the slot is migrating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectKind {
    Moved,
    Ask,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub kind: RedirectKind,
    pub slot: u16,
    /// Empty when the server does not know the endpoint: the host that sent the error.
    pub host: String,
    pub port: u16,
}

/// Reads the text of an error reply (`MOVED 3999 127.0.0.1:6381`, `ASK 3999 :6381`,
/// `MOVED 1 ::1:7000`); `None` for any other error.
pub fn parse_redirect(error: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(error).ok()?;
    let mut parts = text.split(' ');
    let kind = match parts.next()? {
        "MOVED" => RedirectKind::Moved,
        "ASK" => RedirectKind::Ask,
        _ => return None,
    };
    let slot = parts.next()?.parse::<u16>().ok().filter(|&s| s < SLOTS)?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    if parts.next().is_some() {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Redirect {
        kind,
        slot,
        host: host.to_string(),
        port: port.parse().ok().filter(|&p| p != 0)?,
    })
}

#[cfg(test)]
mod tests;
