//! `--broker-threads inline` (an option; threads of their own are the default): the Redis reader and writer
//! run on the shard's loop, so the node has two threads fewer, and still delivers across
//! nodes, survives a Redis restart (resubscribe, `gap`) and keeps its probe going. With
//! their own threads, a shard wakes the writer once per turn, not per publish. Real
//! redis-server, real fanout processes.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{wait_for, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::{json, Value};
use tungstenite::Message;

/// The names of the process's threads (`/proc/<pid>/task/*/comm`).
fn threads(node: &TestNode) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", node.pid()))
        .expect("/proc/<pid>/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

fn healthy(node: &TestNode) {
    wait_for(
        "/healthz 200 (subscriber, publisher and probe up)",
        DEADLINE,
        || (common::healthz(node.addr) == 200).then_some(()),
    );
}

/// Reads `c` until a frame satisfies `want`.
fn recv_until(c: &mut WsClient, want: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let v = c.recv_json(left).expect("the frame before the deadline");
        if want(&v) {
            return v;
        }
    }
}

/// Publishes on `channel` from `p` until every subscriber got one (right after a
/// reconnect the first publishes may precede the resubscribe).
fn publish_until_delivered(p: &mut WsClient, subs: &mut [&mut WsClient], channel: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    for sub in subs.iter_mut() {
        loop {
            assert!(Instant::now() < end, "never delivered on {channel}");
            p.publish(channel, "7");
            let got = sub.recv_json(Duration::from_millis(300));
            if got.is_some_and(|v| v == json!({"channel": channel, "data": 7})) {
                break;
            }
        }
    }
}

#[test]
fn inline_has_no_broker_threads_and_still_delivers_reconnects_and_probes() {
    let mut redis = RedisProcess::start();
    let inline = TestNode::with_redis(&redis, &["--shards", "1", "--broker-threads", "inline"]);
    // No flag: threads of their own are the default, one shard or several.
    let own = TestNode::with_redis(&redis, &["--shards", "1"]);
    healthy(&inline);
    healthy(&own);
    let (ti, to) = (threads(&inline), threads(&own));
    assert!(
        !ti.iter().any(|n| n.starts_with("fanout-redis")),
        "inline: {ti:?}"
    );
    assert!(
        to.iter().any(|n| n.starts_with("fanout-redis-re"))
            && to.iter().any(|n| n.starts_with("fanout-redis-wr")),
        "own: {to:?}"
    );
    assert_eq!(ti.len() + 2, to.len(), "inline {ti:?}, own {to:?}");

    // Across nodes, both ways.
    let (mut sub_i, mut sub_o) = (inline.client(), own.client());
    sub_i.subscribe("x");
    sub_o.subscribe("x");
    let (mut pub_i, mut pub_o) = (inline.client(), own.client());
    pub_o.publish("x", "1");
    for s in [&mut sub_i, &mut sub_o] {
        assert_eq!(s.expect_json(), json!({"channel":"x","data":1}));
    }
    pub_i.publish("x", "2");
    for s in [&mut sub_i, &mut sub_o] {
        assert_eq!(s.expect_json(), json!({"channel":"x","data":2}));
    }

    // Redis restarts: the inline reader notices, resubscribes, owes a gap; the probe
    // comes back (healthz 200 needs it).
    redis.kill();
    wait_for("inline node notices", DEADLINE, || {
        (common::healthz(inline.addr) == 503).then_some(())
    });
    redis.restart();
    assert_eq!(
        recv_until(&mut sub_i, |v| v["type"] == "gap"),
        json!({"type":"gap","channel":"x"})
    );
    healthy(&inline);
    publish_until_delivered(&mut pub_o, &mut [&mut sub_i], "x");
    publish_until_delivered(&mut pub_i, &mut [&mut sub_o], "x");
    redis.wait_numsub("x", 2);
    // Probes keep coming back (one a second): still healthy a while later.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(common::healthz(inline.addr), 200);
    assert_eq!(
        support::metric(inline.addr, "fanout_broker_writer_wakeups_total"),
        0.0,
        "inline: nothing to wake"
    );
}

/// Item 4 of issue #15: the publishes a shard turn reads wake the writer thread once
/// (before: once per publish whenever the writer had parked in between; with that code
/// this test saw 74 wake-ups).
#[test]
fn publishes_wake_the_writer_thread_per_turn_not_per_publish() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "1", "--broker-threads", "own"]);
    healthy(&node);
    let mut sub = node.client();
    sub.subscribe("w");
    let mut p = node.client();
    let before = support::metric(node.addr, "fanout_broker_writer_wakeups_total");
    let n = 2000;
    // 2,000 publishes in one write: the shard reads them in a few turns.
    for i in 0..n {
        let text = format!(r#"{{"type":"publish","channel":"w","data":{i}}}"#);
        p.ws.write(Message::text(text)).unwrap();
    }
    p.ws.flush().unwrap();
    for i in 0..n {
        assert_eq!(
            recv_until(&mut sub, |v| v.get("data").is_some()),
            json!({"channel":"w","data":i})
        );
    }
    let wakes = support::metric(node.addr, "fanout_broker_writer_wakeups_total") - before;
    assert!(wakes >= 1.0, "the writer was woken");
    // The socket reads are 64 KiB (about 1,300 of these frames) and a turn reads what
    // the socket holds: a handful of turns, so a handful of wake-ups.
    assert!(wakes <= 20.0, "{wakes} wake-ups for {n} publishes");
}
