//! The node repairs its own gaps from history (issue #11): its Redis subscriber cut
//! while messages flow, its shard queue overflowing, Redis restarted with and without
//! persistence (epochs: `gap`, never a wrong replay).

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, Broker, RedisProcess, TestNode, DEADLINE};
use serde_json::{json, Value};
use support::history::{next, publish, publish_stream, subscribe};
use support::{get, post, redis_cmd};

fn cut_subscriber_connection_is_repaired_without_gap(broker: Broker) {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis_in(&redis, broker, &["--history-size", "100000"]);
    let publisher = TestNode::with_redis_in(&redis, broker, &["--history-size", "100000"]);
    let ch = "hist:cut";
    let mut a = node.client();
    subscribe(&mut a, ch, None);
    // Fast enough that messages arrive live while a repair read is in flight (the
    // hand-over must drop those the read already brought).
    let total = 4000u64;
    let addr = publisher.addr;
    let pub_thread = publish_stream(addr, ch, total, Duration::from_millis(4));
    // Cut the node's pub/sub connection while the stream flows.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        let killed: i64 = redis_cmd(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed >= 1);
    }
    pub_thread.join().unwrap();
    for n in 1..=total {
        let v = a
            .recv_json(DEADLINE)
            .unwrap_or_else(|| panic!("message {n} never came"));
        assert_ne!(v["type"], "gap", "repaired, not announced: {v}");
        assert_eq!(v["data"]["n"], n, "in order, exactly once: {v}");
    }
    a.expect_silence(Duration::from_millis(300));
    let reconnects = support::metric(node.addr, "fanout_broker_reconnects_total");
    assert!(reconnects >= 4.0, "the subscriber was cut: {reconnects}");
    let repairs = support::metric(node.addr, "fanout_history_repairs_total");
    assert!(repairs >= 4.0, "each cut was repaired: {repairs}");
    assert_eq!(support::metric(node.addr, "fanout_history_gaps_total"), 0.0);
}

/// Redis restarted under a node: without persistence the streams are gone, so both a
/// subscriber that stayed and one that resumes get `gap` (never a replay of another
/// epoch's offsets); with AOF nothing is lost and nobody gets `gap`.
fn redis_restart(persist: bool) {
    let redis_args: &[&str] = if persist {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &[]
    };
    let mut redis = RedisProcess::start_with(redis_args);
    let node = TestNode::with_redis(&redis, &["--history-size", "100"]);
    let ch = "hist:restart";
    let mut stays = node.client();
    subscribe(&mut stays, ch, None);
    let mut leaves = node.client();
    subscribe(&mut leaves, ch, None);
    for n in 1..=3 {
        publish(&node, ch, n);
    }
    let mut offset = String::new();
    for n in 1..=3 {
        assert_eq!(next(&mut stays, ch).0, n);
        let (got, off) = next(&mut leaves, ch);
        assert_eq!(got, n);
        offset = off;
    }
    drop(leaves);
    redis.kill();
    redis.restart();
    wait_for("the node to be healthy again", DEADLINE, || {
        (get(node.addr, "/healthz").status == 200).then_some(())
    });
    for n in 4..=5 {
        publish(&node, ch, n);
    }
    let mut back = node.client();
    subscribe(&mut back, ch, Some(&offset));
    for c in [&mut stays, &mut back] {
        if !persist {
            assert_eq!(c.expect_json(), json!({"type":"gap","channel":ch}));
        }
        for n in 4..=5 {
            assert_eq!(next(c, ch).0, n, "persist={persist}");
        }
        c.expect_silence(Duration::from_millis(300));
    }
    let told = support::metric(node.addr, "fanout_history_gaps_total");
    assert_eq!(told > 0.0, !persist, "history gaps counted: {told}");
}

#[test]
fn redis_restarted_without_persistence_means_gap_never_a_wrong_replay() {
    redis_restart(false);
}

#[test]
fn redis_restarted_with_aof_loses_nothing() {
    redis_restart(true);
}

/// A shard's delivery queue overflowing (a burst larger than it, here a queue of 8)
/// makes the router drop and owe a `gap`; on a history channel the shard reads what it
/// missed from history instead, so the subscriber gets every message, in order, and no
/// `gap`. Without history the same burst announces the loss.
fn an_overflowing_shard_queue_is_repaired_from_history(broker: Broker) {
    for history in [true, false] {
        let redis = RedisProcess::start();
        let size = if history { "10000" } else { "0" };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"));
        cmd.args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
            .args(["--history-size", size, "--shards", "1"])
            .args(broker.with(&[]))
            .env("FANOUT_TEST_SHARD_QUEUE", "8");
        let node = TestNode::spawn(cmd);
        let ch = "burst";
        let mut a = node.client();
        a.send(&json!({"type":"subscribe","channel":ch}).to_string());
        assert_eq!(a.expect_json()["type"], "subscribed");
        let total = 2000u64;
        for chunk in (1..=total).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|n| json!({"channel":ch,"data":{"n":n}}))
                .collect();
            let r = post(
                node.addr,
                "/api/publish",
                &Value::Array(batch).to_string(),
                "",
            );
            assert_eq!(r.status, 202);
        }
        let dropped = support::metric(node.addr, "fanout_dispatch_dropped_total");
        assert!(dropped > 0.0, "the burst overflowed the queue of 8");
        let mut seen = 0;
        let mut gaps = 0;
        while let Some(v) = a.recv_json(Duration::from_secs(2)) {
            if v["type"] == "gap" {
                gaps += 1;
                continue;
            }
            let n = v["data"]["n"].as_u64().unwrap();
            assert!(n > seen, "in order");
            if history {
                assert_eq!(n, seen + 1, "nothing missing: {v}");
            }
            seen = n;
            if seen == total {
                break;
            }
        }
        if history {
            assert_eq!((seen, gaps), (total, 0), "repaired from history");
            assert!(support::metric(node.addr, "fanout_history_repairs_total") > 0.0);
        } else {
            assert!(gaps > 0, "without history the loss is announced");
        }
    }
}

in_both_broker_modes!(
    cut_subscriber_connection_is_repaired_without_gap,
    an_overflowing_shard_queue_is_repaired_from_history,
);
