//! Presence on real Redis with several real nodes: entries written on connect in the
//! Node.js-compatible layout, TTL refreshed by heartbeats, removed on disconnect,
//! exactly this node's entries removed on SIGTERM, a SIGKILLed node's entries no longer
//! online once its liveness key expires (and then cleaned up by a survivor); embedded
//! in-process presence; and the heartbeat cost measurement (ignored by default).

mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{wait_for, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::{json, Value};
use support::{get, redis_cmd, ws_presence};

fn node(redis: &RedisProcess, id: &str) -> TestNode {
    TestNode::with_redis(
        redis,
        &[
            "--server-id",
            id,
            "--presence-user-param",
            "--presence-heartbeat",
            "1",
        ],
    )
}

fn connect(node: &TestNode, user: &str) -> WsClient {
    WsClient::connect(&format!("ws://{}/?user={user}", node.addr))
}

fn entries(redis: &RedisProcess, user: &str) -> HashMap<String, Value> {
    let raw: HashMap<String, String> =
        redis_cmd(redis, &["HGETALL", &format!("connections:{user}")]);
    raw.into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).expect("value is JSON")))
        .collect()
}

fn servers(v: &Value) -> HashSet<String> {
    v["connections"]
        .as_array()
        .expect("connections array")
        .iter()
        .map(|c| c["serverId"].as_str().unwrap().to_string())
        .collect()
}

fn wait_entries(redis: &RedisProcess, user: &str, n: usize) -> HashMap<String, Value> {
    wait_for(&format!("{n} entries for {user}"), DEADLINE, || {
        let e = entries(redis, user);
        (e.len() == n).then_some(e)
    })
}

#[test]
fn connect_heartbeat_and_disconnect_maintain_the_nodejs_layout() {
    let redis = RedisProcess::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let mut alice_a = connect(&a, "alice");
    let _alice_b = connect(&b, "alice");
    let mut bob_b = connect(&b, "bob");

    let e = wait_entries(&redis, "alice", 2);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (field, v) in &e {
        assert_eq!(v["socketId"].as_str(), Some(field.as_str()), "{v}");
        let at = v["connectedAt"].as_i64().expect("connectedAt ms");
        assert!((now - at).abs() < 60_000, "connectedAt {at} vs now {now}");
        let owner = v["serverId"].as_str().unwrap();
        let user: Option<String> = redis_cmd(
            &redis,
            &["HGET", &format!("fanout:node:{owner}:conns"), field],
        );
        assert_eq!(
            user.as_deref(),
            Some("alice"),
            "per-node hash lists the entry"
        );
    }
    let owners: HashSet<String> = e
        .values()
        .map(|v| v["serverId"].as_str().unwrap().into())
        .collect();
    assert_eq!(owners, HashSet::from(["node-a".into(), "node-b".into()]));
    let ttl: i64 = redis_cmd(&redis, &["TTL", "connections:alice"]);
    assert!(ttl > 100 && ttl <= 120, "ttl {ttl}");
    let live: i64 = redis_cmd(&redis, &["PTTL", "fanout:node:node-a"]);
    assert!(live > 0 && live <= 3000, "liveness ttl {live}");
    let nodes: HashSet<String> = redis_cmd(&redis, &["SMEMBERS", "fanout:nodes"]);
    assert_eq!(nodes, HashSet::from(["node-a".into(), "node-b".into()]));

    // Queries, over WebSocket on one node and HTTP on the other.
    let v = ws_presence(&mut alice_a, "alice");
    assert_eq!(v["online"], true);
    assert_eq!(servers(&v), owners);
    let r = get(b.addr, "/api/users/alice/connections");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("Content-Type").as_deref(),
        Some("application/json")
    );
    let h = r.json();
    assert_eq!(
        (h["type"].clone(), h["user"].clone(), h["online"].clone()),
        (json!("presence"), json!("alice"), json!(true))
    );
    assert_eq!(servers(&h), owners);
    let nobody = ws_presence(&mut bob_b, "nobody");
    assert_eq!(
        nobody,
        json!({"type":"presence","user":"nobody","online":false,"connections":[]})
    );

    // A heartbeat refreshes the TTL: let it run down a little, then see it go back up.
    redis_cmd::<i64>(&redis, &["EXPIRE", "connections:alice", "50"]);
    wait_for("heartbeat to refresh the TTL", DEADLINE, || {
        let ttl: i64 = redis_cmd(&redis, &["TTL", "connections:alice"]);
        (ttl > 100).then_some(())
    });

    // Disconnect removes exactly that field, and the key with the last one.
    drop(alice_a);
    let e = wait_entries(&redis, "alice", 1);
    assert_eq!(e.values().next().unwrap()["serverId"], "node-b");
    let left: i64 = redis_cmd(&redis, &["HLEN", "fanout:node:node-a:conns"]);
    assert_eq!(left, 0);
    drop(bob_b);
    wait_for("bob's key to go", DEADLINE, || {
        let n: i64 = redis_cmd(&redis, &["EXISTS", "connections:bob"]);
        (n == 0).then_some(())
    });
    let v = ws_presence(&mut connect(&a, "probe"), "bob");
    assert_eq!(v["online"], false);
}

#[test]
fn sigterm_removes_exactly_this_nodes_entries() {
    let redis = RedisProcess::start();
    let mut a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let mut on_a = [connect(&a, "alice"), connect(&a, "carol")];
    let _on_b = connect(&b, "alice");
    // An entry written by a Node.js process sharing the layout.
    let foreign = r#"{"serverId":"nodejs-1","socketId":"s1","connectedAt":1}"#;
    redis_cmd::<i64>(&redis, &["HSET", "connections:alice", "s1", foreign]);
    wait_entries(&redis, "alice", 3);
    wait_entries(&redis, "carol", 1);

    let status = a.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    for c in on_a.iter_mut() {
        match c.recv_message(DEADLINE) {
            Some(tungstenite::Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    let e = entries(&redis, "alice");
    let owners: HashSet<&str> = e
        .values()
        .map(|v| v["serverId"].as_str().unwrap())
        .collect();
    assert_eq!(owners, HashSet::from(["node-b", "nodejs-1"]));
    for gone in [
        "connections:carol",
        "fanout:node:node-a",
        "fanout:node:node-a:conns",
    ] {
        let n: i64 = redis_cmd(&redis, &["EXISTS", gone]);
        assert_eq!(n, 0, "{gone} should be gone");
    }
    let member: i64 = redis_cmd(&redis, &["SISMEMBER", "fanout:nodes", "node-a"]);
    assert_eq!(member, 0);
    let b_entries: i64 = redis_cmd(&redis, &["HLEN", "fanout:node:node-b:conns"]);
    assert_eq!(b_entries, 1);
}

#[test]
fn a_killed_nodes_entries_stop_counting_once_its_liveness_key_expires() {
    let redis = RedisProcess::start();
    let a = node(&redis, "node-a");
    let b = node(&redis, "node-b");
    let _dave_a = connect(&a, "dave");
    let mut erin_b = connect(&b, "erin");
    wait_entries(&redis, "dave", 1);
    assert_eq!(ws_presence(&mut erin_b, "dave")["online"], true);

    drop(a); // SIGKILL: no cleanup at all
    let v = wait_for("dave to be reported offline", DEADLINE, || {
        let v = ws_presence(&mut erin_b, "dave");
        (v["online"] == false).then_some(v)
    });
    assert_eq!(v["connections"], json!([]));
    let live: i64 = redis_cmd(&redis, &["EXISTS", "fanout:node:node-a"]);
    assert_eq!(live, 0, "offline only after the liveness key expired");
    // The survivor removes the dead node's entries and registration.
    wait_for("dead node swept", DEADLINE, || {
        let field: i64 = redis_cmd(&redis, &["EXISTS", "connections:dave"]);
        let hash: i64 = redis_cmd(&redis, &["EXISTS", "fanout:node:node-a:conns"]);
        let member: i64 = redis_cmd(&redis, &["SISMEMBER", "fanout:nodes", "node-a"]);
        (field + hash + member == 0).then_some(())
    });
    assert_eq!(ws_presence(&mut erin_b, "erin")["online"], true);
}

#[test]
fn a_restarted_node_removes_what_its_previous_process_left() {
    let redis = RedisProcess::start();
    let a = node(&redis, "node-a");
    let _c = connect(&a, "frank");
    wait_entries(&redis, "frank", 1);
    drop(a);
    let _again = node(&redis, "node-a");
    wait_for("leftover removed", DEADLINE, || {
        let n: i64 = redis_cmd(&redis, &["EXISTS", "connections:frank"]);
        (n == 0).then_some(())
    });
}

#[test]
fn embedded_mode_answers_from_in_process_presence_and_off_means_unavailable() {
    let node = TestNode::start(&["--presence-user-param"]);
    let mut alice = WsClient::connect(&format!("ws://{}/?user=alice", node.addr));
    let mut other = node.client();
    let v = ws_presence(&mut other, "alice");
    assert_eq!(v["online"], true);
    assert_eq!(v["connections"].as_array().unwrap().len(), 1);
    let r = get(node.addr, "/api/users/alice/connections");
    assert_eq!((r.status, r.json()["online"].clone()), (200, json!(true)));
    alice.send(r#"{"type":"presence","user":"alice"}"#);
    assert_eq!(alice.expect_json()["online"], true);
    drop(alice);
    wait_for("alice offline", DEADLINE, || {
        (ws_presence(&mut other, "alice")["online"] == false).then_some(())
    });

    let off = TestNode::start(&["--presence", "off"]);
    let mut c = off.client();
    c.send(r#"{"type":"presence","user":"x"}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["type"].clone(), v["code"].clone()),
        (json!("error"), json!("unavailable"))
    );
    assert_eq!(get(off.addr, "/api/users/x/connections").status, 503);
}

#[test]
fn an_http_presence_query_redis_cannot_answer_in_time_gets_504() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--handshake-timeout", "1"]);
    // Stall Redis longer than the presence thread's 3 s I/O timeout.
    let sleeper = redis.debug_sleep(6);
    let t = std::time::Instant::now();
    let r = get(node.addr, "/api/users/nobody/connections");
    assert_eq!(r.status, 504, "answered at the deadline, not closed bare");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    sleeper.join().unwrap();
    // Once Redis is back, queries are answered again.
    wait_for("presence answers again", DEADLINE, || {
        (get(node.addr, "/api/users/nobody/connections").status == 200).then_some(())
    });
}

#[test]
fn without_the_user_parameter_flag_the_user_is_the_connection_id() {
    let redis = RedisProcess::start();
    let a = TestNode::with_redis(&redis, &["--server-id", "solo"]);
    let _c = WsClient::connect(&format!("ws://{}/?user=mallory", a.addr));
    let cid = wait_for("one node entry", DEADLINE, || {
        let m: HashMap<String, String> = redis_cmd(&redis, &["HGETALL", "fanout:node:solo:conns"]);
        m.into_iter().next()
    });
    assert_eq!(cid.0, cid.1, "user id == connection id");
    assert!(entries(&redis, "mallory").is_empty());
    assert_eq!(entries(&redis, &cid.0).len(), 1);
}

/// The cost of one heartbeat for 100,000 local users against a real Redis, and of
/// recording them in rounds of the presence thread's batch size. Run with
/// `cargo test --release --test presence -- --ignored --nocapture heartbeat_cost`.
#[test]
#[ignore]
fn heartbeat_cost_for_100k_connections() {
    let redis = RedisProcess::start();
    let n = 100_000;
    let cost = fanout::presence::bench::measure(&redis.url(), n).expect("measure");
    let info: String = redis_cmd(&redis, &["INFO", "memory"]);
    let used = info
        .lines()
        .find(|l| l.starts_with("used_memory_human:"))
        .unwrap_or("?");
    println!(
        "presence with {n} connections: recorded in {:?} ({} rounds); one heartbeat {:?} ({} commands); redis {used}",
        cost.record, cost.record_rounds, cost.heartbeat, cost.heartbeat_commands,
    );
    let ttl: i64 = redis_cmd(&redis, &["TTL", "connections:bench-99999"]);
    assert!(ttl > 0);
}

#[test]
fn connect_disconnect_churn_leaves_no_entries() {
    let redis = RedisProcess::start();
    let a = node(&redis, "churn-node");
    for _ in 0..5 {
        let clients: Vec<WsClient> = (0..40).map(|_| connect(&a, "churn")).collect();
        drop(clients);
    }
    let mut probe = connect(&a, "probe");
    wait_for("every churned entry removed", DEADLINE, || {
        let v = ws_presence(&mut probe, "churn");
        let n: i64 = redis_cmd(&redis, &["EXISTS", "connections:churn"]);
        let left: i64 = redis_cmd(&redis, &["HLEN", "fanout:node:churn-node:conns"]);
        (v["online"] == false && n == 0 && left == 1).then_some(())
    });
}

#[test]
fn after_a_redis_outage_the_node_rewrites_its_entries() {
    let mut redis = RedisProcess::start();
    let a = node(&redis, "outage-node");
    let alice = connect(&a, "alice");
    wait_entries(&redis, "alice", 1);
    redis.kill();
    let mut bob = connect(&a, "bob");
    drop(alice);
    let v = wait_for("an answer while Redis is down", DEADLINE, || {
        bob.send(r#"{"type":"presence","user":"bob"}"#);
        bob.recv_json(DEADLINE)
    });
    assert_eq!(v["code"], "unavailable", "{v}");
    redis.restart(); // empty: nothing persisted
    wait_entries(&redis, "bob", 1);
    assert!(entries(&redis, "alice").is_empty());
    let live: i64 = redis_cmd(&redis, &["EXISTS", "fanout:node:outage-node"]);
    assert_eq!(live, 1);
    wait_for("bob online again", DEADLINE, || {
        (ws_presence(&mut bob, "bob")["online"] == true).then_some(())
    });
}
