//! Redis killed, restarted, paused, or our subscriber killed: nodes stay up, clients
//! stay connected, publishers hear `unavailable` promptly, and delivery comes back with
//! a `gap` notice and no client action.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Broker, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::{json, Value};

fn healthz(node: &TestNode) -> u16 {
    let Ok(mut s) = std::net::TcpStream::connect(node.addr) else {
        return 0;
    };
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Reads until a message matching `want` arrives (skipping others), with a deadline.
fn recv_until(c: &mut WsClient, want: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let v = c
            .recv_json(left)
            .expect("wanted message before the deadline");
        if want(&v) {
            return v;
        }
    }
}

/// Publishes (with an id) until the subscribers see one of the messages: after an
/// outage a publish may be accepted before the subscriber connection has resubscribed
/// (that loss is what the `gap` notice reports), so "delivery is back" means a publish
/// made after recovery reaches every subscriber.
fn publish_until_delivered(p: &mut WsClient, subs: &mut [&mut WsClient], channel: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        assert!(
            Instant::now() < end,
            "publishes never reached the subscribers again"
        );
        let data = format!("again-{attempt}");
        p.send(&format!(
            r#"{{"type":"publish","channel":"{channel}","data":"{data}","id":{attempt}}}"#
        ));
        if p.expect_json()["type"] != "published" {
            std::thread::sleep(Duration::from_millis(100)); // retry pacing, not a wait for an event
            continue;
        }
        let got = subs.iter_mut().all(|s| loop {
            match s.recv_json(Duration::from_millis(500)) {
                Some(v) if v["data"] == data.as_str() => break true,
                Some(_) => continue,
                None => break false,
            }
        });
        if got {
            return;
        }
    }
}

fn redis_restart_keeps_clients_and_resumes_delivery_with_a_gap(broker: Broker) {
    let mut redis = RedisProcess::start();
    let a = TestNode::with_redis_in(&redis, broker, &[]);
    let b = TestNode::with_redis_in(&redis, broker, &[]);
    let mut sub_a = a.client();
    let mut sub_b = b.client();
    sub_a.subscribe("live");
    sub_b.subscribe("live");
    let mut p = a.client();
    p.publish("live", "1");
    assert_eq!(sub_a.expect_json(), json!({"channel":"live","data":1}));
    assert_eq!(sub_b.expect_json(), json!({"channel":"live","data":1}));
    common::wait_for("node A healthy (first probe back)", DEADLINE, || {
        (healthz(&a) == 200).then_some(())
    });

    redis.kill();
    // Publishers hear about it promptly.
    common::wait_for("node A to notice", DEADLINE, || {
        (healthz(&a) == 503).then_some(())
    });
    let t = Instant::now();
    p.send(r#"{"type":"publish","channel":"live","data":2,"id":"down"}"#);
    let v = p.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["id"].as_str()),
        (Some("unavailable"), Some("down"))
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "unavailable took {:?}",
        t.elapsed()
    );

    redis.restart();
    // Both nodes resubscribe by themselves and tell their subscribers about the gap.
    for s in [&mut sub_a, &mut sub_b] {
        assert_eq!(
            recv_until(s, |v| v["type"] == "gap"),
            json!({"type":"gap","channel":"live"})
        );
    }
    common::wait_for("node A healthy", DEADLINE, || {
        (healthz(&a) == 200).then_some(())
    });
    publish_until_delivered(&mut p, &mut [&mut sub_a, &mut sub_b], "live");
    redis.wait_numsub("live", 2);
}

fn a_node_started_while_redis_is_down_connects_when_it_appears(broker: Broker) {
    let mut redis = RedisProcess::start();
    redis.kill();
    let node = TestNode::with_redis_in(&redis, broker, &[]);
    assert_eq!(healthz(&node), 503);
    let mut c = node.client();
    c.send(r#"{"type":"subscribe","channel":"late"}"#);
    redis.restart();
    assert_eq!(
        c.expect_json(),
        json!({"type":"subscribed","channel":"late"})
    );
    common::wait_for("healthy", DEADLINE, || {
        (healthz(&node) == 200).then_some(())
    });
    redis.publish("late", "7");
    assert_eq!(
        recv_until(&mut c, |v| v.get("data").is_some()),
        json!({"channel":"late","data":7})
    );
}

fn client_kill_of_our_subscriber_is_repaired_with_a_gap(broker: Broker) {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis_in(&redis, broker, &[]);
    let mut c = node.client();
    c.subscribe("k");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.conn())
        .unwrap();
    assert!(killed >= 1);
    assert_eq!(
        recv_until(&mut c, |v| v["type"] == "gap"),
        json!({"type":"gap","channel":"k"})
    );
    redis.wait_numsub("k", 1);
    redis.publish("k", "1");
    assert_eq!(
        recv_until(&mut c, |v| v.get("data").is_some()),
        json!({"channel":"k","data":1})
    );
}

fn a_paused_redis_makes_publishers_fail_fast_and_recovers(broker: Broker) {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis_in(&redis, broker, &[]);
    let mut c = node.client();
    c.subscribe("p");
    let mut p = node.client();
    // Block Redis's event loop for 5 s from another connection.
    let sleeper = redis.debug_sleep(5);
    let t = Instant::now();
    p.send(r#"{"type":"publish","channel":"p","data":1,"id":"paused"}"#);
    let v = p.expect_json();
    // Redis cannot answer for 5 s: the writer gives up after its publish timeout
    // (REPLY_TIMEOUT, 3 s, src/broker/redis/writer.rs) and the publisher hears
    // `unavailable`, not a late `published`.
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str(), v["id"].as_str()),
        (Some("error"), Some("unavailable"), Some("paused")),
        "{v}"
    );
    let publish_timeout = Duration::from_secs(3);
    assert!(
        t.elapsed() < publish_timeout + Duration::from_secs(1),
        "unavailable took {:?}, publish timeout is {publish_timeout:?}",
        t.elapsed()
    );
    sleeper.join().unwrap();
    publish_until_delivered(&mut p, &mut [&mut c], "p");
    common::wait_for("healthy after the pause", Duration::from_secs(15), || {
        (healthz(&node) == 200).then_some(())
    });
}

fn a_deaf_subscriber_connection_is_detected_and_replaced_with_a_gap(broker: Broker) {
    let redis = RedisProcess::start();
    let proxy = common::proxy::Proxy::start(redis.port);
    let url = proxy.url();
    let node = TestNode::start(&broker.with(&["--redis", url.as_str()]));
    let mut c = node.client();
    c.subscribe("d");
    let mut p = node.client();
    publish_until_delivered(&mut p, &mut [&mut c], "d");
    common::wait_for("node healthy", DEADLINE, || {
        (common::healthz(node.addr) == 200).then_some(())
    });
    // The node's subscriber is the one pub/sub connection Redis has.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.conn())
        .unwrap();
    let addrs: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .collect();
    assert_eq!(addrs.len(), 1, "one subscriber connection expected: {list}");
    let before = proxy.connections();
    proxy.make_deaf(addrs[0]);

    // The probe stops coming back: unhealthy, then a new subscriber connection.
    common::wait_for("/healthz 503 with a deaf subscriber", DEADLINE, || {
        (common::healthz(node.addr) == 503).then_some(())
    });
    common::wait_for("a new connection through the proxy", DEADLINE, || {
        (proxy.connections() > before).then_some(())
    });
    assert_eq!(
        recv_until(&mut c, |v| v["type"] == "gap"),
        json!({"type":"gap","channel":"d"})
    );
    publish_until_delivered(&mut p, &mut [&mut c], "d");
    common::wait_for("healthy again", DEADLINE, || {
        (common::healthz(node.addr) == 200).then_some(())
    });
}

in_both_broker_modes!(
    redis_restart_keeps_clients_and_resumes_delivery_with_a_gap,
    a_node_started_while_redis_is_down_connects_when_it_appears,
    client_kill_of_our_subscriber_is_repaired_with_a_gap,
    a_paused_redis_makes_publishers_fail_fast_and_recovers,
    a_deaf_subscriber_connection_is_detected_and_replaced_with_a_gap,
);
