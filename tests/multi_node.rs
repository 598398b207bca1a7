//! Several real nodes on one real Redis act as one server.

mod common;

use common::{Broker, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::json;

fn three_nodes_deliver_across_each_other_in_publisher_order(broker: Broker) {
    let redis = RedisProcess::start();
    let nodes: Vec<TestNode> = (0..3)
        .map(|_| TestNode::with_redis_in(&redis, broker, &["--shards", "2"]))
        .collect();
    // Two subscribers on every node.
    let mut subs: Vec<WsClient> = nodes
        .iter()
        .flat_map(|n| [n.client(), n.client()])
        .collect();
    for s in subs.iter_mut() {
        s.subscribe("room");
    }
    redis.wait_numsub("room", 3);
    // One publisher on every node, 1,000 messages each.
    let mut pubs: Vec<WsClient> = nodes.iter().map(|n| n.client()).collect();
    for i in 0..1000 {
        for (p, publisher) in pubs.iter_mut().enumerate() {
            publisher.publish("room", &format!(r#"{{"p":{p},"i":{i}}}"#));
        }
    }
    for (n, s) in subs.iter_mut().enumerate() {
        let mut next = [0i64; 3];
        for _ in 0..3000 {
            let v = s
                .recv_json(DEADLINE)
                .unwrap_or_else(|| panic!("subscriber {n} stalled at {next:?}"));
            assert_eq!(v["channel"], "room");
            let p = v["data"]["p"].as_u64().unwrap() as usize;
            let i = v["data"]["i"].as_i64().unwrap();
            assert_eq!(i, next[p], "subscriber {n}: publisher {p} out of order");
            next[p] += 1;
        }
        assert_eq!(next, [1000, 1000, 1000]);
    }
}

#[test]
fn a_node_only_subscribes_to_channels_it_has_subscribers_for() {
    let redis = RedisProcess::start();
    let a = TestNode::with_redis(&redis, &[]);
    let b = TestNode::with_redis(&redis, &[]);
    let mut on_a = a.client();
    on_a.subscribe("only-a");
    let mut on_b = b.client();
    on_b.subscribe("only-b");
    assert_eq!(redis.numsub("only-a"), 1);
    assert_eq!(redis.numsub("only-b"), 1);
    let mut publisher = b.client();
    publisher.publish("only-a", r#""to a""#);
    assert_eq!(
        on_a.expect_json(),
        json!({"channel":"only-a","data":"to a"})
    );
    on_b.expect_silence(std::time::Duration::from_millis(200));
}

in_both_broker_modes!(three_nodes_deliver_across_each_other_in_publisher_order,);
