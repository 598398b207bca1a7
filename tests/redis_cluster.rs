//! Redis Cluster against a real six-process cluster (`common::cluster`): the slot map read
//! from `CLUSTER SHARDS` and `CLUSTER SLOTS`, `key_slot` and a real `-MOVED`; then the
//! cluster broker (`--redis-cluster`, `common::cluster_kit`): three nodes × 300 channels
//! over every slot, each message once and in order; a SIGKILLed primary and a graceful
//! `CLUSTER FAILOVER` while publishing (gap on its channels, history channels complete,
//! the time until delivery is back printed); a slot migration; presence across nodes.

mod common;
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::cluster::{command, text, RedisCluster};
use common::cluster_kit::*;
use common::{wait_for, ConfigFile, TestNode, WsClient, DEADLINE};
use fanout::redis::cluster::{key_slot, parse_redirect, RedirectKind, SlotMap, SLOTS};
use fanout::redis::resp::Value;

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

    let traffic = Traffic::start(&nodes, &channels);
    std::thread::sleep(Duration::from_millis(1000));
    let changed = Instant::now();
    if graceful {
        let range = map.range(key_slot(channels[0].as_bytes())).unwrap();
        let replica = range.replicas[0].port.unwrap();
        let reply = command(replica, &["CLUSTER", "FAILOVER"]).unwrap();
        assert!(matches!(reply, Value::Simple(_)), "{reply:?}");
    } else {
        let i = cluster.ports.iter().position(|&p| p == victim).unwrap();
        cluster.kill(i);
    }
    // Delivery is back on a node once a message published after the change arrived on
    // every affected channel.
    let back: Vec<Duration> = (0..nodes.len())
        .map(|i| {
            let since = changed + Duration::from_millis(50);
            let took = traffic.delivering(i, &affected, since, Duration::from_secs(20)) - changed;
            let what = if graceful { "failed over" } else { "killed" };
            eprintln!("node {i}: primary {what} → delivery back after {took:?}");
            took
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let logs = traffic.stop();
    for node in &nodes {
        wait_for("/healthz 200 again", DEADLINE, || {
            (common::healthz(node.addr) == 200).then_some(())
        });
    }
    let map = slot_map(&cluster, (!graceful).then_some(victim));
    check_logs(&logs, &channels, &affected, &map);
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
    let on_from = |hist: bool| -> Vec<String> {
        channels
            .iter()
            .filter(|c| c.starts_with("hist:") == hist && port_of(c) == from)
            .cloned()
            .collect()
    };
    let mut moving: Vec<String> = on_from(false).into_iter().take(2).collect();
    moving.extend(on_from(true).into_iter().take(1));
    assert_eq!(moving.len(), 3, "{moving:?}");

    let traffic = Traffic::start(&nodes, &channels);
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
    for i in 0..nodes.len() {
        let since = moved_at + Duration::from_millis(300);
        traffic.delivering(i, &moving, since, Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let logs = traffic.stop();
    check_logs(&logs, &channels, &moving, &slot_map(&cluster, None));
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

#[test]
fn an_acl_user_applies_to_every_node_of_the_cluster() {
    // Every node knows the user `app` with a password that needs percent-encoding; the
    // default user stays open for the test's own admin commands.
    let cluster = RedisCluster::start_with(|_| {
        ["--user", "app", "on", ">p@ss:w/d", "~*", "&*", "+@all"]
            .iter()
            .map(|a| a.to_string())
            .collect()
    });
    // One seed is enough: the other nodes are found through CLUSTER SHARDS and reached
    // with the same credentials.
    let url = format!(
        "redis+cluster://app:p%40ss%3Aw%2Fd@127.0.0.1:{}",
        cluster.ports[0]
    );
    let nodes: Vec<TestNode> = (0..2)
        .map(|_| TestNode::start(&["--redis-cluster", &url]))
        .collect();
    let channels = spread_channels(12);
    let mut sub = nodes[0].client();
    subscribe_all(&mut sub, &channels);
    for node in &nodes {
        wait_for("/healthz 200", DEADLINE, || {
            (common::healthz(node.addr) == 200).then_some(())
        });
    }
    let mut publisher = nodes[1].client();
    for (n, ch) in channels.iter().enumerate() {
        publisher.publish(ch, &format!(r#"{{"p":0,"n":{n}}}"#));
    }
    let mut seen = Seen::new();
    let mut gaps = HashSet::new();
    collect(&mut sub, channels.len(), &mut seen, &mut gaps);
    assert_eq!(seen.len(), channels.len(), "{seen:?}");
    // Every primary has the nodes' connections (2 nodes × subscriber, publisher, and
    // the topology connections of some), all as user app.
    for port in primary_ports(&cluster) {
        let list = text(&command(port, &["CLIENT", "LIST"]).unwrap()).unwrap();
        let ours = list.lines().filter(|l| l.contains(" user=app ")).count();
        assert!(ours >= 4, "primary {port}: {ours} clients as app\n{list}");
    }
}

/// History channels whose names carry braces: a channel's stream and epoch keys must sit
/// in the channel's own slot (the publish script appends and `SPUBLISH`es in one step),
/// whether the name has a hash tag of its own (`{team}:a`, `x{y}z`) or a lone brace.
#[test]
fn history_channels_with_braces_in_their_names_publish_and_replay() {
    let cluster = RedisCluster::start();
    let node = cluster_node(&cluster, &["--history-size", "100"]);
    let channels = ["{team}:a", "{team}:b", "x{y}z", "b{c", "plain"];
    let mut sub = node.client();
    for ch in channels {
        sub.send(&serde_json::json!({"type":"subscribe","channel":ch}).to_string());
        let v = sub.expect_json();
        assert_eq!(v["type"], "subscribed", "{ch}: {v}");
    }
    let mut publisher = node.client();
    for ch in channels {
        for n in 0..3 {
            publisher.send(
                &serde_json::json!({"type":"publish","channel":ch,"data":{"n":n},"id":n})
                    .to_string(),
            );
            let ack = publisher.expect_json();
            assert_eq!(ack["type"], "published", "{ch} #{n}: {ack}");
            assert!(ack["offset"].is_string(), "{ch} #{n}: {ack}");
        }
    }
    let mut got = 0;
    while got < 3 * channels.len() {
        let v = sub.expect_json();
        assert!(v["data"]["n"].is_u64(), "{v}");
        got += 1;
    }
    for ch in channels {
        publisher.send(&serde_json::json!({"type":"history","channel":ch,"limit":10}).to_string());
        let v = publisher.expect_json();
        let ns: Vec<u64> = v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{ch}: {v}"))
            .iter()
            .map(|m| m["data"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [0, 1, 2], "{ch}: {v}");
    }
    // A `}` without a hash tag cannot share a key's slot: refused up front, with a
    // reason, on every way in (not an `unavailable` per publish).
    for cmd in [
        serde_json::json!({"type":"subscribe","channel":"a}b"}),
        serde_json::json!({"type":"publish","channel":"a}b","data":1,"id":1}),
        serde_json::json!({"type":"history","channel":"{}d","id":2}),
    ] {
        publisher.send(&cmd.to_string());
        let v = publisher.expect_json();
        assert_eq!(v["type"], "error", "{cmd}: {v}");
        assert_eq!(v["code"], "bad_channel", "{cmd}: {v}");
        assert!(v["message"].as_str().unwrap().contains("hash tag"), "{v}");
    }
    let http = |method: &str, path: &str, body: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(node.addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let answer = http("POST", "/api/publish", r#"{"channel":"a}b","data":1}"#);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("hash tag"),
        "{answer}"
    );
    let answer = http("GET", "/api/channels/a%7Db/history", "");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("hash tag"),
        "{answer}"
    );
}
