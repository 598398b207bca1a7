//! One node on a real Redis: interoperation with plain Redis clients, reference-counted
//! broker subscriptions, and fan-out to many subscribers.

mod common;

use std::time::Duration;

use common::{RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::json;

#[test]
fn redis_publish_reaches_subscribers_verbatim_or_as_string() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &[]);
    let mut c = node.client();
    c.subscribe("news");
    assert_eq!(redis.publish("news", r#"{"a":1,  "b" : [1.50]}"#), 1);
    let msg = c.ws.read().unwrap();
    // Byte for byte: the payload is not re-encoded.
    assert_eq!(
        msg.to_text().unwrap(),
        r#"{"channel":"news","data":{"a":1,  "b" : [1.50]}}"#
    );
    redis.publish("news", "plain \"text\"");
    assert_eq!(
        c.expect_json(),
        json!({"channel":"news","data":"plain \"text\""})
    );
}

#[test]
fn client_publish_is_visible_to_redis_subscribers_and_acked() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &[]);
    let mut sub = redis.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut c = node.client();
    c.send(r#"{"type":"publish","channel":"news","data":{"x": 2},"id":"m1"}"#);
    assert_eq!(c.expect_json(), json!({"type":"published","id":"m1"}));
    let m = pubsub.get_message().unwrap();
    assert_eq!(m.get_channel_name(), "news");
    assert_eq!(m.get_payload::<String>().unwrap(), r#"{"x": 2}"#);
}

#[test]
fn subscriptions_are_reference_counted_in_redis() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "2"]);
    let mut a = node.client();
    let mut b = node.client();
    a.subscribe("rc");
    b.subscribe("rc");
    // Two local subscribers (on two shards), one Redis subscription.
    assert_eq!(redis.numsub("rc"), 1);
    a.send(r#"{"type":"unsubscribe","channel":"rc"}"#);
    assert_eq!(
        a.expect_json(),
        json!({"type":"unsubscribed","channel":"rc"})
    );
    redis.publish("rc", "1");
    assert_eq!(b.expect_json(), json!({"channel":"rc","data":1}));
    a.expect_silence(Duration::from_millis(300));
    assert_eq!(redis.numsub("rc"), 1);
    b.send(r#"{"type":"unsubscribe","channel":"rc"}"#);
    assert_eq!(
        b.expect_json(),
        json!({"type":"unsubscribed","channel":"rc"})
    );
    redis.wait_numsub("rc", 0);
    // A disconnect counts as leaving too.
    let mut c = node.client();
    c.subscribe("gone");
    assert_eq!(redis.numsub("gone"), 1);
    drop(c);
    redis.wait_numsub("gone", 0);
}

#[test]
fn five_hundred_subscribers_each_get_all_two_hundred_messages() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &[]);
    let mut clients: Vec<WsClient> = (0..500).map(|_| node.client()).collect();
    for c in clients.iter_mut() {
        c.subscribe("wide");
    }
    let mut publisher = node.client();
    for i in 0..200 {
        publisher.publish("wide", &i.to_string());
    }
    for (n, c) in clients.iter_mut().enumerate() {
        for i in 0..200 {
            let v = c
                .recv_json(DEADLINE)
                .unwrap_or_else(|| panic!("client {n} missed message {i}"));
            assert_eq!(v, json!({"channel":"wide","data":i}), "client {n}");
        }
    }
}
