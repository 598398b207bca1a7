//! A node without Redis: the in-process bus, same protocol.

mod common;
mod support;

use std::time::Duration;

use common::TestNode;
use serde_json::json;

#[test]
fn embedded_mode_delivers_acks_and_unsubscribes() {
    let node = TestNode::start(&["--shards", "2"]);
    let mut a = node.client();
    let mut b = node.client();
    a.subscribe("e");
    b.subscribe("e");
    let mut p = node.client();
    p.send(r#"{"type":"publish","channel":"e","data":[1, "two"],"id":42}"#);
    assert_eq!(p.expect_json(), json!({"type":"published","id":42}));
    for c in [&mut a, &mut b] {
        let m = c.ws.read().unwrap();
        assert_eq!(m.to_text().unwrap(), r#"{"channel":"e","data":[1, "two"]}"#);
    }
    b.send(r#"{"type":"unsubscribe","channel":"e"}"#);
    assert_eq!(
        b.expect_json(),
        json!({"type":"unsubscribed","channel":"e"})
    );
    p.publish("e", "true");
    assert_eq!(a.expect_json(), json!({"channel":"e","data":true}));
    b.expect_silence(Duration::from_millis(200));
    // A publisher does not receive its own message unless subscribed.
    p.expect_silence(Duration::from_millis(50));
}

#[test]
fn per_publisher_order_holds_in_embedded_mode() {
    let node = TestNode::start(&[]);
    let mut s = node.client();
    s.subscribe("o");
    let mut p = node.client();
    for i in 0..1000 {
        p.publish("o", &i.to_string());
    }
    for i in 0..1000 {
        assert_eq!(s.expect_json(), json!({"channel":"o","data":i}));
    }
}

#[test]
fn null_data_is_published_and_delivered_byte_for_byte() {
    let node = TestNode::start(&[]);
    let mut s = node.client();
    s.subscribe("c");
    let mut p = node.client();
    p.send(r#"{"type":"publish","channel":"c","data":null}"#);
    p.send(r#"{"type":"publish","channel":"c","data": null,"id":"n1"}"#);
    assert_eq!(p.expect_json(), json!({"type":"published","id":"n1"}));
    for _ in 0..2 {
        match s.recv_message(common::DEADLINE) {
            Some(tungstenite::Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v, json!({"channel":"c","data":null}));
                assert_eq!(t.as_str(), r#"{"channel":"c","data":null}"#);
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    // Over HTTP too: the same payload, the same delivery.
    let r = support::post(
        node.addr,
        "/api/publish",
        r#"{"channel":"c","data":null}"#,
        "",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(s.expect_json(), json!({"channel":"c","data":null}));
}
