//! Redis Cluster groundwork against a real six-process cluster (`common::cluster`): the
//! slot map read from `CLUSTER SHARDS` and `CLUSTER SLOTS` covers every slot with three
//! primaries and agrees between the two, `key_slot` agrees with `CLUSTER KEYSLOT`, and a
//! real `-MOVED` points at the primary the map names.

mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{command, text, RedisCluster};
use common::{wait_for, ConfigFile, TestNode, WsClient, DEADLINE};
use fanout::redis::cluster::{key_slot, parse_redirect, RedirectKind, SlotMap, SLOTS};
use fanout::redis::resp::Value;
use serde_json::json;

#[test]
fn the_slot_map_of_a_real_cluster() {
    let cluster = RedisCluster::start();
    let seed = cluster.ports[0];
    // Replicas show up in the map once every node knows them.
    let shards = wait_for("3 primaries with a replica each", DEADLINE, || {
        let reply = command(seed, &["CLUSTER", "SHARDS"]).ok()?;
        let map = SlotMap::from_cluster_shards(&reply, "127.0.0.1").expect("CLUSTER SHARDS");
        map.ranges()
            .iter()
            .all(|r| r.replicas.len() == 1)
            .then_some(map)
    });
    assert!(shards.is_complete(), "{shards:?}");
    assert_eq!(shards.covered(), u32::from(SLOTS));
    let primaries = shards.primaries();
    assert_eq!(primaries.len(), 3, "{shards:?}");
    for p in &primaries {
        assert_eq!(p.host, "127.0.0.1");
        assert!(cluster.ports.contains(&p.port.unwrap()), "{p:?}");
    }

    let reply = command(seed, &["CLUSTER", "SLOTS"]).unwrap();
    let slots = SlotMap::from_cluster_slots(&reply, "127.0.0.1").expect("CLUSTER SLOTS");
    assert!(slots.is_complete());
    for slot in (0..SLOTS).step_by(97).chain([SLOTS - 1]) {
        assert_eq!(
            shards.primary(slot).unwrap().port,
            slots.primary(slot).unwrap().port,
            "slot {slot}"
        );
    }

    for key in [
        "foo",
        "bar",
        "chat:room:42",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "ünïcødé",
        "",
    ] {
        let Value::Int(slot) = command(seed, &["CLUSTER", "KEYSLOT", key]).unwrap() else {
            panic!("CLUSTER KEYSLOT {key:?}: not an integer");
        };
        assert_eq!(i64::from(key_slot(key.as_bytes())), slot, "{key:?}");
    }

    // A real MOVED from a primary that does not own "foo"'s slot.
    let owner = shards.primary(key_slot(b"foo")).unwrap().port.unwrap();
    let other = primaries
        .iter()
        .map(|p| p.port.unwrap())
        .find(|&p| p != owner)
        .unwrap();
    let reply = command(other, &["GET", "foo"]).unwrap();
    let Value::Error(e) = &reply else {
        panic!("expected MOVED, got {reply:?}");
    };
    let moved = parse_redirect(e).unwrap_or_else(|| panic!("{:?}", text(&reply)));
    assert_eq!(
        (moved.kind, moved.slot, moved.port),
        (RedirectKind::Moved, 12182, owner)
    );
}

/// `--redis-cluster` with every node of `cluster` as a seed (plus `extra`).
fn cluster_node(cluster: &RedisCluster, extra: &[&str]) -> TestNode {
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
fn subscribe_all(client: &mut WsClient, channels: &[String]) {
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
fn spread_channels(n: usize) -> Vec<String> {
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
type Seen = HashMap<(u64, String), Vec<u64>>;

/// Reads deliveries until `want` arrived (or the deadline); records gaps per channel.
fn collect(client: &mut WsClient, want: usize, seen: &mut Seen, gaps: &mut HashSet<String>) {
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

#[test]
fn three_nodes_deliver_every_message_once_in_order_over_300_channels() {
    let cluster = RedisCluster::start();
    let nodes: Vec<TestNode> = (0..3).map(|_| cluster_node(&cluster, &[])).collect();
    let channels = spread_channels(300);
    let mut subs: Vec<WsClient> = nodes.iter().map(TestNode::client).collect();
    for s in &mut subs {
        subscribe_all(s, &channels);
    }
    // Healthy: every primary's subscriber is up and its probe comes back.
    for node in &nodes {
        wait_for(
            "/healthz 200 (a probe back from every primary)",
            DEADLINE,
            || (common::healthz(node.addr) == 200).then_some(()),
        );
    }
    const PER_CHANNEL: u64 = 5;
    let publishers: Vec<std::thread::JoinHandle<()>> = nodes
        .iter()
        .enumerate()
        .map(|(p, node)| {
            let mut client = node.client();
            let channels = channels.clone();
            std::thread::spawn(move || {
                for n in 0..PER_CHANNEL {
                    for ch in &channels {
                        client.publish(ch, &format!(r#"{{"p":{p},"n":{n}}}"#));
                    }
                }
                // Keep the connection until its publishes are surely read.
                std::thread::sleep(Duration::from_millis(500));
            })
        })
        .collect();
    let want = 3 * channels.len() * PER_CHANNEL as usize;
    for (i, s) in subs.iter_mut().enumerate() {
        let mut seen = Seen::new();
        let mut gaps = HashSet::new();
        collect(s, want, &mut seen, &mut gaps);
        let got: usize = seen.values().map(Vec::len).sum();
        assert_eq!(got, want, "node {i}: deliveries");
        assert!(gaps.is_empty(), "node {i}: gaps {gaps:?}");
        for p in 0..3u64 {
            for ch in &channels {
                let ns = seen.get(&(p, ch.clone())).cloned().unwrap_or_default();
                assert_eq!(
                    ns,
                    (0..PER_CHANNEL).collect::<Vec<_>>(),
                    "node {i}, publisher {p}, {ch}"
                );
            }
        }
        s.expect_silence(Duration::from_millis(300));
    }
    for p in publishers {
        p.join().unwrap();
    }
    // Every primary carried some of it: the channels were really spread.
    for port in primary_ports(&cluster) {
        let Value::Array(chans) = command(port, &["PUBSUB", "SHARDCHANNELS", "room:*"]).unwrap()
        else {
            panic!("PUBSUB SHARDCHANNELS");
        };
        assert!(chans.len() > 50, "primary {port}: {} channels", chans.len());
    }
}

/// The plain ports of the cluster's current primaries.
fn primary_ports(cluster: &RedisCluster) -> Vec<u16> {
    let reply = cluster
        .ports
        .iter()
        .find_map(|&p| command(p, &["CLUSTER", "SHARDS"]).ok())
        .unwrap();
    let map = SlotMap::from_cluster_shards(&reply, "127.0.0.1").unwrap();
    map.primaries().iter().map(|n| n.port.unwrap()).collect()
}

const HIST: &str = "[[namespace]]\nprefix = \"hist:\"\nhistory_size = 100000\n";

/// What one subscriber saw: per channel, (sequence number, when) in arrival order, and
/// when each `gap` came.
#[derive(Default)]
struct Log {
    msgs: HashMap<String, Vec<(u64, Instant)>>,
    gaps: HashMap<String, Vec<Instant>>,
}

/// Reads `client` into a shared log until `stop` is set and it has been quiet a while.
fn record(
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
fn publish_loop(
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
fn slot_map(cluster: &RedisCluster, skip: Option<u16>) -> SlotMap {
    let reply = cluster
        .ports
        .iter()
        .filter(|&&p| Some(p) != skip)
        .find_map(|&p| command(p, &["CLUSTER", "SHARDS"]).ok())
        .unwrap();
    SlotMap::from_cluster_shards(&reply, "127.0.0.1").unwrap()
}

/// The sequence numbers kept in a history channel's stream (read from its primary).
fn stream_ns(map: &SlotMap, channel: &str) -> Vec<u64> {
    let key = format!("__fanout:h:{{{channel}}}");
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

/// Kills (or fails over) the primary serving `channels[0]` while three nodes publish and
/// subscribe; returns per node how long until delivery on that primary's channels was
/// back, after asserting order, `gap`s and complete history channels.
fn survive_primary_change(graceful: bool) -> Vec<Duration> {
    let mut cluster = RedisCluster::start();
    let cfg = ConfigFile::new("cluster-hist", HIST);
    let nodes: Vec<TestNode> = (0..3)
        .map(|_| cluster_node(&cluster, &["--config", cfg.path()]))
        .collect();
    let mut channels = spread_channels(30);
    channels.extend((0..6).map(|i| format!("hist:{i}")));
    let map = slot_map(&cluster, None);
    let victim = map
        .primary(key_slot(channels[0].as_bytes()))
        .unwrap()
        .port
        .unwrap();
    let affected: Vec<String> = channels
        .iter()
        .filter(|c| map.primary(key_slot(c.as_bytes())).unwrap().port == Some(victim))
        .cloned()
        .collect();
    assert!(
        affected.iter().any(|c| c.starts_with("hist:")),
        "{affected:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut logs = Vec::new();
    let mut readers = Vec::new();
    for node in &nodes {
        let mut client = node.client();
        subscribe_all(&mut client, &channels);
        let (log, thread) = record(client, stop.clone());
        logs.push(log);
        readers.push(thread);
    }
    let publish_stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_loop(&nodes[0], channels.clone(), publish_stop.clone());
    std::thread::sleep(Duration::from_millis(1000));

    let changed = Instant::now();
    if graceful {
        let replica = map
            .range(key_slot(channels[0].as_bytes()))
            .unwrap()
            .replicas[0]
            .port
            .unwrap();
        let reply = command(replica, &["CLUSTER", "FAILOVER"]).unwrap();
        assert!(matches!(reply, Value::Simple(_)), "{reply:?}");
    } else {
        let i = cluster.ports.iter().position(|&p| p == victim).unwrap();
        cluster.kill(i);
    }
    // Delivery is back on a node once a message published after the change arrived
    // on every affected channel.
    let mut back = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let at = wait_for(
            "delivery back on the new primary",
            Duration::from_secs(20),
            || {
                let log = log.lock().unwrap();
                affected
                    .iter()
                    .map(|c| {
                        log.msgs
                            .get(c)?
                            .iter()
                            .find(|(_, t)| *t > changed + Duration::from_millis(50))
                            .map(|(_, t)| *t)
                    })
                    .collect::<Option<Vec<Instant>>>()
                    .map(|ts| ts.into_iter().max().unwrap())
            },
        );
        let took = at - changed;
        eprintln!(
            "node {i}: primary {} → delivery back after {took:?}",
            if graceful { "failed over" } else { "killed" }
        );
        back.push(took);
    }
    std::thread::sleep(Duration::from_millis(500));
    publish_stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    for node in &nodes {
        wait_for("/healthz 200 again", DEADLINE, || {
            (common::healthz(node.addr) == 200).then_some(())
        });
    }
    let map = slot_map(&cluster, (!graceful).then_some(victim));
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        for ch in &channels {
            let ns: Vec<u64> = log
                .msgs
                .get(ch)
                .map(|v| v.iter().map(|m| m.0).collect())
                .unwrap_or_default();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "node {i} {ch}: out of order or twice"
            );
            let gaps = log.gaps.get(ch).map_or(0, Vec::len);
            let hit = affected.contains(ch);
            if ch.starts_with("hist:") {
                // Repaired from history: everything history kept was delivered, no gap.
                assert_eq!(gaps, 0, "node {i} {ch}: history channels repair");
                let kept = stream_ns(&map, ch);
                let got: HashSet<u64> = ns.iter().copied().collect();
                let missing: Vec<&u64> = kept.iter().filter(|n| !got.contains(n)).collect();
                assert!(missing.is_empty(), "node {i} {ch}: missing {missing:?}");
            } else if hit {
                assert!(gaps >= 1, "node {i} {ch}: no gap after the primary changed");
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
    back
}

#[test]
fn a_killed_primary_fails_over_and_delivery_comes_back() {
    let back = survive_primary_change(false);
    let worst = back.iter().max().unwrap();
    eprintln!("FAILOVER (SIGKILL, cluster-node-timeout 1000 ms): primary killed → delivery back: worst {worst:?} over 3 nodes");
    assert!(*worst < Duration::from_secs(15));
}

#[test]
fn a_graceful_failover_moves_subscriptions_to_the_new_primary() {
    let back = survive_primary_change(true);
    let worst = back.iter().max().unwrap();
    eprintln!("CLUSTER FAILOVER (graceful): delivery back: worst {worst:?} over 3 nodes");
    assert!(*worst < Duration::from_secs(10));
}

/// The node id of the node on `port`.
fn node_id(port: u16) -> String {
    text(&command(port, &["CLUSTER", "MYID"]).unwrap()).unwrap()
}

/// Moves `slot` from the primary on `from` to the one on `to` the way `redis-cli
/// --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE on
/// every primary.
fn migrate_slot(slot: u16, from: u16, to: u16, primaries: &[u16]) {
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

#[test]
fn a_slot_migration_moves_subscriptions_with_it() {
    let cluster = RedisCluster::start();
    let cfg = ConfigFile::new("cluster-migrate", HIST);
    let nodes: Vec<TestNode> = (0..3)
        .map(|_| cluster_node(&cluster, &["--config", cfg.path()]))
        .collect();
    let mut channels = spread_channels(30);
    channels.extend((0..6).map(|i| format!("hist:{i}")));
    let map = slot_map(&cluster, None);
    let port_of = |c: &str| map.primary(key_slot(c.as_bytes())).unwrap().port.unwrap();
    let from = port_of(&channels[0]);
    let to = primary_ports(&cluster)
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    // Two plain channels and one history channel of `from` move to `to`.
    let mut moving: Vec<String> = channels
        .iter()
        .filter(|c| !c.starts_with("hist:") && port_of(c) == from)
        .take(2)
        .cloned()
        .collect();
    moving.extend(
        channels
            .iter()
            .filter(|c| c.starts_with("hist:") && port_of(c) == from)
            .take(1)
            .cloned(),
    );
    assert_eq!(moving.len(), 3, "{moving:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut logs = Vec::new();
    let mut readers = Vec::new();
    for node in &nodes {
        let mut client = node.client();
        subscribe_all(&mut client, &channels);
        let (log, thread) = record(client, stop.clone());
        logs.push(log);
        readers.push(thread);
    }
    let publish_stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_loop(&nodes[0], channels.clone(), publish_stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let moved_at = Instant::now();
    let prims = primary_ports(&cluster);
    for c in &moving {
        migrate_slot(key_slot(c.as_bytes()), from, to, &prims);
    }
    // Every node resubscribes the moved channels on their new primary at once: Redis's
    // `sunsubscribe` says so (the map is otherwise refreshed only every 30 s).
    let migrated = Instant::now();
    for c in &moving {
        wait_for(
            "the moved channels subscribed on the new primary",
            Duration::from_secs(3),
            || {
                let Value::Array(v) = command(to, &["PUBSUB", "SHARDNUMSUB", c]).ok()? else {
                    return None;
                };
                (v.get(1) == Some(&Value::Int(3))).then_some(())
            },
        );
    }
    eprintln!(
        "moved channels resubscribed {:?} after the last SETSLOT",
        migrated.elapsed()
    );
    for (i, log) in logs.iter().enumerate() {
        wait_for(
            "delivery on the moved channels",
            Duration::from_secs(10),
            || {
                let log = log.lock().unwrap();
                moving
                    .iter()
                    .map(|c| {
                        let m = log.msgs.get(c)?;
                        m.iter()
                            .find(|(_, t)| *t > moved_at + Duration::from_millis(300))
                            .map(|m| m.1)
                    })
                    .collect::<Option<Vec<Instant>>>()
            },
        );
        eprintln!("node {i}: moved channels delivering again");
    }
    std::thread::sleep(Duration::from_millis(300));
    publish_stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    let map = slot_map(&cluster, None);
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        for ch in &channels {
            let ns: Vec<u64> = log
                .msgs
                .get(ch)
                .map(|v| v.iter().map(|m| m.0).collect())
                .unwrap_or_default();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "node {i} {ch}: out of order or twice"
            );
            let gaps = log.gaps.get(ch).map_or(0, Vec::len);
            if ch.starts_with("hist:") {
                assert_eq!(gaps, 0, "node {i} {ch}: history channels repair");
                let kept = stream_ns(&map, ch);
                let got: HashSet<u64> = ns.iter().copied().collect();
                let missing: Vec<&u64> = kept.iter().filter(|n| !got.contains(n)).collect();
                assert!(missing.is_empty(), "node {i} {ch}: missing {missing:?}");
            } else if moving.contains(ch) {
                assert!(gaps >= 1, "node {i} {ch}: no gap after its slot moved");
            } else {
                assert_eq!(
                    gaps, 0,
                    "node {i} {ch}: a gap on a channel that did not move"
                );
                let last = *ns.last().unwrap();
                assert_eq!(
                    ns,
                    (0..=last).collect::<Vec<_>>(),
                    "node {i} {ch}: lost messages"
                );
            }
        }
    }
}

/// The servers `GET /api/users/{user}/connections` on `node` lists.
fn presence_servers(node: &TestNode, user: &str) -> HashSet<String> {
    let r = support::get(node.addr, &format!("/api/users/{user}/connections"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serverId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn presence_works_across_nodes_on_a_cluster() {
    let cluster = RedisCluster::start();
    let flags = |id| {
        [
            "--server-id",
            id,
            "--presence-user-param",
            "--presence-heartbeat",
            "1",
        ]
    };
    let mut a = cluster_node(&cluster, &flags("node-a"));
    let b = cluster_node(&cluster, &flags("node-b"));
    let connect =
        |n: &TestNode, user: &str| WsClient::connect(&format!("ws://{}/?user={user}", n.addr));
    let _alice_a = connect(&a, "alice");
    let _alice_b = connect(&b, "alice");
    let _bob_b = connect(&b, "bob");
    let both = HashSet::from(["node-a".to_string(), "node-b".to_string()]);
    wait_for("alice on both nodes, asked on either", DEADLINE, || {
        (presence_servers(&a, "alice") == both && presence_servers(&b, "alice") == both)
            .then_some(())
    });
    assert_eq!(
        presence_servers(&a, "bob"),
        HashSet::from(["node-b".to_string()])
    );
    // SIGTERM removes exactly node-a's entries (its keys live in different slots).
    assert!(a.terminate(Duration::from_secs(15)).success());
    assert_eq!(
        presence_servers(&b, "alice"),
        HashSet::from(["node-b".to_string()])
    );
    let map = slot_map(&cluster, None);
    for gone in ["fanout:node:node-a", "fanout:node:node-a:conns"] {
        let port = map
            .primary(key_slot(gone.as_bytes()))
            .unwrap()
            .port
            .unwrap();
        assert_eq!(
            command(port, &["EXISTS", gone]).unwrap(),
            Value::Int(0),
            "{gone}"
        );
    }
}
