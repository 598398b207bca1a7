//! The cluster broker's test kit: fanout nodes on a `RedisCluster`, channel names spread
//! over every slot, pipelined subscribing, steady publishing while a subscriber on every
//! node logs what it gets (`Traffic`), the checks that follow a topology change
//! (`check_logs`), reading the slot map and a history stream from the cluster, and moving
//! a slot by hand (`migrate_slot`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fanout::redis::cluster::{key_slot, SlotMap, SLOTS};
use fanout::redis::resp::Value;
use serde_json::json;

use super::cluster::{command, text, RedisCluster};
use super::{wait_for, TestNode, WsClient};

/// `--redis-cluster` with every node of `cluster` as a seed (plus `extra`).
pub fn cluster_node(cluster: &RedisCluster, extra: &[&str]) -> TestNode {
    let seeds: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let seeds = seeds.join(",");
    let mut args = vec!["--redis-cluster", seeds.as_str(), "--shards", "2"];
    args.extend_from_slice(extra);
    TestNode::start(&args)
}

/// Subscribes `client` to every channel, pipelined, and waits for every `subscribed`.
pub fn subscribe_all(client: &mut WsClient, channels: &[String]) {
    for ch in channels {
        client.send(&json!({"type":"subscribe","channel":ch}).to_string());
    }
    let mut left: HashSet<&str> = channels.iter().map(String::as_str).collect();
    while !left.is_empty() {
        let v = client
            .recv_json(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{} subscriptions never confirmed", left.len()));
        assert_eq!(v["type"], "subscribed", "{v}");
        assert!(left.remove(v["channel"].as_str().unwrap()), "{v}");
    }
}

/// Channel names whose slots spread over all 16384 slots (and so over every primary).
pub fn spread_channels(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut i = 0u32;
    while out.len() < n {
        let name = format!("room:{i}");
        let bucket = key_slot(name.as_bytes()) as usize * n / usize::from(SLOTS);
        if seen.insert(bucket) {
            out.push(name);
        }
        i += 1;
    }
    out
}

/// Per (publisher, channel): the sequence numbers received, in order.
pub type Seen = HashMap<(u64, String), Vec<u64>>;

/// Reads deliveries until `want` arrived (or the deadline); records gaps per channel.
pub fn collect(client: &mut WsClient, want: usize, seen: &mut Seen, gaps: &mut HashSet<String>) {
    let end = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < want && Instant::now() < end {
        let Some(v) = client.recv_json(Duration::from_millis(200)) else {
            continue;
        };
        if v["type"] == "gap" {
            gaps.insert(v["channel"].as_str().unwrap().to_string());
            continue;
        }
        let ch = v["channel"].as_str().unwrap().to_string();
        let (p, n) = (
            v["data"]["p"].as_u64().unwrap(),
            v["data"]["n"].as_u64().unwrap(),
        );
        seen.entry((p, ch)).or_default().push(n);
        got += 1;
    }
}

/// The plain ports of the cluster's current primaries.
pub fn primary_ports(cluster: &RedisCluster) -> Vec<u16> {
    let reply = cluster
        .ports
        .iter()
        .find_map(|&p| command(p, &["CLUSTER", "SHARDS"]).ok())
        .unwrap();
    let map = SlotMap::from_cluster_shards(&reply, "127.0.0.1").unwrap();
    map.primaries().iter().map(|n| n.port.unwrap()).collect()
}

pub const HIST: &str = "[[namespace]]\nprefix = \"hist:\"\nhistory_size = 100000\n";

/// What one subscriber saw: per channel, (sequence number, when) in arrival order, and
/// when each `gap` came.
#[derive(Default)]
pub struct Log {
    pub msgs: HashMap<String, Vec<(u64, Instant)>>,
    pub gaps: HashMap<String, Vec<Instant>>,
}

/// Reads `client` into a shared log until `stop` is set and it has been quiet a while.
pub fn record(
    mut client: WsClient,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Log>>, std::thread::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let out = log.clone();
    let thread = std::thread::spawn(move || loop {
        match client.recv_json(Duration::from_millis(300)) {
            Some(v) => {
                let ch = v["channel"].as_str().unwrap_or_default().to_string();
                let mut log = log.lock().unwrap();
                if v["type"] == "gap" {
                    log.gaps.entry(ch).or_default().push(Instant::now());
                } else if let Some(n) = v["data"]["n"].as_u64() {
                    log.msgs.entry(ch).or_default().push((n, Instant::now()));
                }
            }
            None if stop.load(Ordering::SeqCst) => return,
            None => {}
        }
    });
    (out, thread)
}

/// Publishes `{"n":k}` round robin on `channels` through `node` until `stop` is set,
/// every channel's k counting up from 0.
pub fn publish_loop(
    node: &TestNode,
    channels: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mut client = node.client();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for ch in &channels {
                client.publish(ch, &format!(r#"{{"n":{n}}}"#));
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// The cluster's slot map, read from any node still up.
pub fn slot_map(cluster: &RedisCluster, skip: Option<u16>) -> SlotMap {
    let reply = cluster
        .ports
        .iter()
        .filter(|&&p| Some(p) != skip)
        .find_map(|&p| command(p, &["CLUSTER", "SHARDS"]).ok())
        .unwrap();
    SlotMap::from_cluster_shards(&reply, "127.0.0.1").unwrap()
}

/// The sequence numbers kept in a history channel's stream (read from its primary).
pub fn stream_ns(map: &SlotMap, channel: &str) -> Vec<u64> {
    let key = String::from_utf8(fanout::broker::redis::history::stream_key(channel)).unwrap();
    let port = map.primary(key_slot(key.as_bytes())).unwrap().port.unwrap();
    let Value::Array(entries) = command(port, &["XRANGE", &key, "-", "+"]).unwrap() else {
        panic!("XRANGE {key}");
    };
    entries
        .iter()
        .map(|e| {
            let Value::Array(e) = e else { panic!("entry") };
            let Value::Array(fields) = &e[1] else {
                panic!("fields")
            };
            let v: serde_json::Value = serde_json::from_str(&text(&fields[1]).unwrap()).unwrap();
            v["n"].as_u64().unwrap()
        })
        .collect()
}

/// The node id of the node on `port`.
pub fn node_id(port: u16) -> String {
    text(&command(port, &["CLUSTER", "MYID"]).unwrap()).unwrap()
}

/// Moves `slot` from the primary on `from` to the one on `to` the way `redis-cli
/// --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE on
/// every primary.
pub fn migrate_slot(slot: u16, from: u16, to: u16, primaries: &[u16]) {
    let s = slot.to_string();
    let (from_id, to_id) = (node_id(from), node_id(to));
    let ok = |v: Value| assert!(matches!(v, Value::Simple(_)), "{v:?}");
    ok(command(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]).unwrap());
    ok(command(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]).unwrap());
    loop {
        let Value::Array(keys) = command(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]).unwrap()
        else {
            panic!("GETKEYSINSLOT");
        };
        if keys.is_empty() {
            break;
        }
        let keys: Vec<String> = keys.iter().map(|k| text(k).unwrap()).collect();
        let port = to.to_string();
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            port.as_str(),
            "",
            "0",
            "5000",
            "KEYS",
        ];
        args.extend(keys.iter().map(String::as_str));
        ok(command(from, &args).unwrap());
    }
    for &p in std::iter::once(&to)
        .chain([&from])
        .chain(primaries.iter().filter(|&&p| p != from && p != to))
    {
        ok(command(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).unwrap());
    }
}

/// A subscriber on every node logging every channel, and a publisher on the first node.
pub struct Traffic {
    pub logs: Vec<Arc<Mutex<Log>>>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    publish_stop: Arc<AtomicBool>,
    publisher: JoinHandle<()>,
}

impl Traffic {
    pub fn start(nodes: &[TestNode], channels: &[String]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut readers = Vec::new();
        for node in nodes {
            let mut client = node.client();
            subscribe_all(&mut client, channels);
            let (log, thread) = record(client, stop.clone());
            logs.push(log);
            readers.push(thread);
        }
        let publish_stop = Arc::new(AtomicBool::new(false));
        let publisher = publish_loop(&nodes[0], channels.to_vec(), publish_stop.clone());
        Traffic {
            logs,
            stop,
            readers,
            publish_stop,
            publisher,
        }
    }

    /// When node `i`'s subscriber had, on every one of `channels`, a message that
    /// arrived after `since` (waits up to `timeout`).
    pub fn delivering(
        &self,
        i: usize,
        channels: &[String],
        since: Instant,
        timeout: Duration,
    ) -> Instant {
        wait_for("delivery on the changed channels", timeout, || {
            let log = self.logs[i].lock().unwrap();
            channels
                .iter()
                .map(|c| {
                    log.msgs
                        .get(c)?
                        .iter()
                        .find(|(_, t)| *t > since)
                        .map(|m| m.1)
                })
                .collect::<Option<Vec<Instant>>>()
                .map(|ts| ts.into_iter().max().unwrap())
        })
    }

    /// Stops publishing, then the subscribers once they have read what is in flight.
    pub fn stop(self) -> Vec<Arc<Mutex<Log>>> {
        self.publish_stop.store(true, Ordering::SeqCst);
        self.publisher.join().unwrap();
        self.stop.store(true, Ordering::SeqCst);
        for r in self.readers {
            r.join().unwrap();
        }
        self.logs
    }
}

/// After a topology change that touched `changed`: every channel in order without
/// duplicates on every node; history channels got everything their stream kept and no
/// `gap`; changed plain channels got a `gap`; the others no `gap` and no loss.
pub fn check_logs(
    logs: &[Arc<Mutex<Log>>],
    channels: &[String],
    changed: &[String],
    map: &SlotMap,
) {
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        for ch in channels {
            let ns: Vec<u64> = log
                .msgs
                .get(ch)
                .map(|v| v.iter().map(|m| m.0).collect())
                .unwrap_or_default();
            if let Some(at) = ns.windows(2).position(|w| w[0] >= w[1]) {
                let around = &ns[at.saturating_sub(8)..(at + 8).min(ns.len())];
                panic!("node {i} {ch}: out of order or twice at #{at}: … {around:?} …");
            }
            let gaps = log.gaps.get(ch).map_or(0, Vec::len);
            if ch.starts_with("hist:") {
                // Repaired from history: everything history kept was delivered, no gap.
                assert_eq!(gaps, 0, "node {i} {ch}: history channels repair");
                let kept = stream_ns(map, ch);
                let got: HashSet<u64> = ns.iter().copied().collect();
                let missing: Vec<&u64> = kept.iter().filter(|n| !got.contains(n)).collect();
                assert!(missing.is_empty(), "node {i} {ch}: missing {missing:?}");
            } else if changed.contains(ch) {
                assert!(gaps >= 1, "node {i} {ch}: no gap after its primary changed");
            } else {
                assert_eq!(gaps, 0, "node {i} {ch}: a gap on an untouched primary");
                let last = *ns.last().unwrap();
                assert_eq!(
                    ns,
                    (0..=last).collect::<Vec<_>>(),
                    "node {i} {ch}: untouched primary lost messages"
                );
            }
        }
    }
}
