//! A subscriber that stops reading is dealt with by the policy, and the other
//! subscribers of the same channel are not delayed and lose nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestNode, DEADLINE};

/// A raw WebSocket that subscribes and then never reads again.
fn stalled_subscriber(node: &TestNode, channel: &str) -> TcpStream {
    let mut s = common::raw_upgrade(node.addr);
    let cmd = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
    s.write_all(&fanout::ws::inbound::client_frame(
        1,
        true,
        cmd.as_bytes(),
        [9, 8, 7, 6],
    ))
    .unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).contains("subscribed"));
    s
}

fn metric(node: &TestNode, name: &str) -> u64 {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_stalled_reader_is_closed_with_4000_and_others_get_everything_in_time() {
    let node = TestNode::start(&["--outbound-limit", "65536", "--shards", "1"]);
    let mut stalled = stalled_subscriber(&node, "flood");
    let mut good = node.client();
    good.subscribe("flood");
    let mut publisher = node.client();
    let payload = format!("\"{}\"", "z".repeat(4000));
    // ~8 MB towards a client that reads nothing; the good one reads along.
    let start = Instant::now();
    for i in 0..2000 {
        publisher.publish("flood", &payload);
        let v = good.expect_json();
        assert_eq!(v["channel"], "flood", "message {i}");
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    common::wait_for("a slow-consumer close", DEADLINE, || {
        (metric(&node, "fanout_slow_consumer_closes_total") == 1).then_some(())
    });
    // The stalled client finds a close frame 4000 after whatever was queued before.
    let mut all = Vec::new();
    let _ = stalled.read_to_end(&mut all);
    let close_at = all
        .windows(4)
        .rposition(|w| w[0] == 0x88 && w[2..4] == 4000u16.to_be_bytes());
    assert!(close_at.is_some(), "no close 4000 in {} bytes", all.len());
}

#[test]
fn drop_oldest_policy_keeps_the_connection_and_says_so_once() {
    let node = TestNode::start(&[
        "--outbound-limit",
        "65536",
        "--slow-consumer",
        "drop-oldest",
    ]);
    let stalled = stalled_subscriber(&node, "flood");
    let mut publisher = node.client();
    let payload = format!("\"{}\"", "z".repeat(4000));
    for _ in 0..500 {
        publisher.publish("flood", &payload);
    }
    publisher.send(r#"{"type":"publish","channel":"flood","data":0,"id":"last"}"#);
    assert_eq!(publisher.expect_json()["type"], "published");
    common::wait_for("dropped frames counted", DEADLINE, || {
        (metric(&node, "fanout_slow_consumer_dropped_total") > 0).then_some(())
    });
    assert_eq!(metric(&node, "fanout_slow_consumer_closes_total"), 0);
    // stalled + publisher + the /metrics request itself: the stalled one is still open.
    assert_eq!(metric(&node, "fanout_connections"), 3);
    drop(stalled);
}
