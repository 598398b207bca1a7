//! The broker side seen from Redis and from clients: SUBSCRIBE/UNSUBSCRIBE keep their
//! order per channel, unsubscribes are never lost, nothing is confirmed while Redis is
//! down, a connection waits for at most one `subscribed`, an oversized Redis message is
//! dropped with a `gap` instead of closing subscribers, and publishes lost with the
//! writer connection are counted. Real redis-server, real fanout processes.

mod common;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_for, Broker, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::{json, Value};
use tungstenite::Message;

/// `calls` of one command in `INFO commandstats` (0 if never called).
fn command_calls(redis: &RedisProcess, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    let key = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `PUBSUB NUMSUB` of many channels in one command.
fn numsub_many(redis: &RedisProcess, channels: &[String]) -> Vec<i64> {
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("NUMSUB");
    for c in channels {
        cmd.arg(c);
    }
    let pairs: Vec<(String, i64)> = cmd.query(&mut redis.conn()).unwrap();
    pairs.into_iter().map(|(_, n)| n).collect()
}

fn healthz(node: &TestNode) -> u16 {
    support::get(node.addr, "/healthz").status
}

/// Waits until the node's subscriber and probe are up (so INFO baselines are stable).
fn wait_healthy(node: &TestNode) {
    wait_for("/healthz 200", DEADLINE, || {
        (healthz(node) == 200).then_some(())
    });
}

/// Writes every text frame of `texts` and flushes once: one TCP write, so the shard
/// handles them in one read.
fn send_batch(c: &mut WsClient, texts: &[String]) {
    for t in texts {
        c.ws.write(Message::text(t.as_str())).unwrap();
    }
    c.ws.flush().unwrap();
}

fn sub(channel: &str) -> String {
    json!({"type": "subscribe", "channel": channel}).to_string()
}

fn unsub(channel: &str) -> String {
    json!({"type": "unsubscribe", "channel": channel}).to_string()
}

/// Publishes `payload` on `channel` from a plain Redis client until one subscriber
/// receives it on `c` (after an outage the first publishes may precede the
/// resubscribe); returns every frame `c` received on the way, in order.
fn publish_until_received(
    redis: &RedisProcess,
    c: &mut WsClient,
    channel: &str,
    payload: &str,
) -> Vec<Value> {
    let want = json!({"channel": channel, "data": serde_json::from_str::<Value>(payload).unwrap()});
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < end, "never delivered; saw {seen:?}");
        redis.publish(channel, payload);
        while let Some(v) = c.recv_json(Duration::from_millis(300)) {
            let done = v == want;
            seen.push(v);
            if done {
                return seen;
            }
        }
    }
}

/// Item 7: SUBSCRIBE c and UNSUBSCRIBE c decided in one reader turn must reach Redis in
/// that order. Reordered (all UNSUBSCRIBEs first), Redis ends up subscribed to channels
/// nobody wants, and the node receives their traffic forever.
fn subscribe_then_unsubscribe_in_one_packet_leaves_redis_unsubscribed(broker: Broker) {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis_in(&redis, broker, &["--shards", "1"]);
    wait_healthy(&node);
    let subs0 = command_calls(&redis, "subscribe");
    let unsubs0 = command_calls(&redis, "unsubscribe");

    // Each channel's pair adjacent, so the reader sees most pairs in one turn.
    let channels: Vec<String> = (0..200).map(|i| format!("order-{i}")).collect();
    let mut c = node.client();
    let batch: Vec<String> = channels
        .iter()
        .flat_map(|ch| [sub(ch), unsub(ch)])
        .collect();
    send_batch(&mut c, &batch);
    for ch in &channels {
        // Only `unsubscribed` replies: a waiter that left is owed nothing.
        assert_eq!(
            c.expect_json(),
            json!({"type": "unsubscribed", "channel": ch})
        );
    }
    // Both kinds of command have reached Redis...
    wait_for("SUBSCRIBE and UNSUBSCRIBE at Redis", DEADLINE, || {
        (command_calls(&redis, "subscribe") > subs0
            && command_calls(&redis, "unsubscribe") > unsubs0)
            .then_some(())
    });
    // ...and the last word per channel was UNSUBSCRIBE.
    wait_for("every channel unsubscribed in Redis", DEADLINE, || {
        numsub_many(&redis, &channels)
            .iter()
            .all(|&n| n == 0)
            .then_some(())
    });
    // Settled, not passing through zero: still nothing a second later.
    std::thread::sleep(Duration::from_millis(500));
    assert!(numsub_many(&redis, &channels).iter().all(|&n| n == 0));

    // Subscribe, unsubscribe, subscribe again in one packet: subscribed, once.
    let subs1 = command_calls(&redis, "subscribe");
    send_batch(&mut c, &[sub("again"), unsub("again"), sub("again")]);
    assert_eq!(
        c.expect_json(),
        json!({"type": "unsubscribed", "channel": "again"})
    );
    assert_eq!(
        c.expect_json(),
        json!({"type": "subscribed", "channel": "again"})
    );
    redis.wait_numsub("again", 1);
    let got = publish_until_received(&redis, &mut c, "again", "1");
    assert_eq!(got, vec![json!({"channel": "again", "data": 1})]);
    assert!(command_calls(&redis, "subscribe") > subs1);
}

/// Item 8: an unsubscribe the broker queue cannot take is owed and retried, never
/// dropped: otherwise Redis keeps the channel subscribed forever.
fn unsubscribes_are_never_lost_when_the_broker_queue_is_full(broker: Broker) {
    let redis = RedisProcess::start();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--redis",
        &redis.url(),
    ])
    .args(broker.with(&[]))
    .env("FANOUT_TEST_READER_QUEUE", "2");
    let node = TestNode::spawn(cmd);
    wait_healthy(&node);
    let subs0 = command_calls(&redis, "subscribe");

    let channels: Vec<String> = (0..1000).map(|i| format!("owed-{i}")).collect();
    let mut c = node.client();
    let mut batch: Vec<String> = channels.iter().map(|ch| sub(ch)).collect();
    batch.extend(channels.iter().map(|ch| unsub(ch)));
    send_batch(&mut c, &batch);
    // Every unsubscribe is answered (some subscribes were refused: "broker is busy").
    let mut unsubscribed = 0;
    while unsubscribed < channels.len() {
        let v = c.expect_json();
        match v["type"].as_str() {
            Some("unsubscribed") => unsubscribed += 1,
            Some("error") => assert_eq!(v["code"], "unavailable", "{v}"),
            _ => panic!("unexpected {v}"),
        }
    }
    wait_for("some SUBSCRIBE at Redis", DEADLINE, || {
        (command_calls(&redis, "subscribe") > subs0).then_some(())
    });
    wait_for("every channel unsubscribed in Redis", DEADLINE, || {
        numsub_many(&redis, &channels)
            .iter()
            .all(|&n| n == 0)
            .then_some(())
    });
    wait_for("no channel left on the node", DEADLINE, || {
        (support::metric(node.addr, "fanout_channels") == 0.0).then_some(())
    });
}

/// Item 8: after the Redis connection is lost nothing is live: a new subscriber is not
/// told `subscribed` until Redis confirms again; then it is, before any delivery, and
/// the existing subscriber gets its `gap` before the next message.
#[test]
fn nothing_is_confirmed_while_redis_is_down() {
    let mut redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "1"]);
    wait_healthy(&node);
    let mut a = node.client();
    a.subscribe("live");

    redis.kill();
    wait_for("/healthz 503", DEADLINE, || {
        (healthz(&node) == 503).then_some(())
    });
    let mut b = node.client();
    b.send(&sub("live"));
    b.expect_silence(Duration::from_millis(1500));

    redis.restart();
    assert_eq!(
        b.expect_json(),
        json!({"type": "subscribed", "channel": "live"})
    );
    let got_b = publish_until_received(&redis, &mut b, "live", "{\"n\":1}");
    assert_eq!(
        got_b.last().unwrap(),
        &json!({"channel": "live", "data": {"n": 1}})
    );
    let got_a = publish_until_received(&redis, &mut a, "live", "{\"n\":2}");
    // Nothing was published before the outage: the gap comes first.
    assert_eq!(
        got_a[0],
        json!({"type": "gap", "channel": "live"}),
        "the subscriber that lived through the outage hears of it first: {got_a:?}"
    );
}

/// Item 9: subscribing again to a channel still waiting for Redis adds no waiter: one
/// `subscribed` comes, however many times the client asked.
#[test]
fn repeated_subscribes_while_pending_get_one_reply() {
    let mut redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "1"]);
    wait_healthy(&node);
    redis.kill();
    wait_for("/healthz 503", DEADLINE, || {
        (healthz(&node) == 503).then_some(())
    });
    let mut c = node.client();
    let batch: Vec<String> = (0..20).map(|_| sub("pending")).collect();
    send_batch(&mut c, &batch);
    c.expect_silence(Duration::from_millis(500));
    redis.restart();
    assert_eq!(
        c.expect_json(),
        json!({"type": "subscribed", "channel": "pending"})
    );
    let got = publish_until_received(&redis, &mut c, "pending", "7");
    assert_eq!(
        got,
        vec![json!({"channel": "pending", "data": 7})],
        "one subscribed only, then the delivery"
    );
}

/// Item 9: a raw PUBLISH larger than --max-message is dropped at the router (counted,
/// `gap` owed) instead of reaching, and closing, every subscriber.
#[test]
fn an_oversized_redis_message_is_dropped_with_a_gap() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "2", "--max-message", "1024"]);
    wait_healthy(&node);
    let mut a = node.client();
    let mut b = node.client();
    a.subscribe("big");
    b.subscribe("big");
    let huge = serde_json::to_string(&"x".repeat(4096)).unwrap();
    assert_eq!(redis.publish("big", &huge), 1);
    redis.publish("big", "{\"after\":true}");
    for c in [&mut a, &mut b] {
        assert_eq!(c.expect_json(), json!({"type": "gap", "channel": "big"}));
        assert_eq!(
            c.expect_json(),
            json!({"channel": "big", "data": {"after": true}})
        );
    }
    assert_eq!(
        support::metric(node.addr, "fanout_broker_message_too_large_total"),
        1.0
    );
    // Still open and subscribed.
    redis.publish("big", "2");
    assert_eq!(a.expect_json(), json!({"channel": "big", "data": 2}));
}

/// Item 10: publishes without an id that are in flight when the writer connection is
/// dropped (Redis stalled past the reply timeout) are counted as failed.
fn publishes_lost_with_the_writer_connection_are_counted(broker: Broker) {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis_in(&redis, broker, &["--shards", "1"]);
    wait_healthy(&node);
    let mut c = node.client();
    let before = support::metric(node.addr, "fanout_publish_failed_total");
    let sleeper = redis.debug_sleep(6);
    for i in 0..20 {
        c.publish("lost", &i.to_string());
    }
    // The writer gives up on the stalled connection (3 s) and fails what it had.
    wait_for(
        "20 failed publishes counted",
        Duration::from_secs(15),
        || {
            (support::metric(node.addr, "fanout_publish_failed_total") - before >= 20.0)
                .then_some(())
        },
    );
    sleeper.join().unwrap();
}

in_both_broker_modes!(
    subscribe_then_unsubscribe_in_one_packet_leaves_redis_unsubscribed,
    unsubscribes_are_never_lost_when_the_broker_queue_is_full,
    publishes_lost_with_the_writer_connection_are_counted,
);
