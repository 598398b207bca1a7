//! A node without Redis: the in-process bus, same protocol.

mod common;

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
