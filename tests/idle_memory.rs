//! After a burst of connections went idle, the node gives the freed heap back to the OS
//! (`shard::trim`): their outbound queues are freed after a quiet second, and glibc
//! would otherwise keep that memory in the process for good. The RSS effect is measured
//! in docs/benchmarks.md ("idle connections"); this test checks the trim happens, once,
//! and that the node serves on afterwards.

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, TestNode};
use support::metric;

#[test]
fn a_burst_of_idle_connections_is_followed_by_one_trim() {
    let node = TestNode::start(&["--shards", "1"]);
    assert_eq!(metric(node.addr, "fanout_memory_trims_total"), 0.0);
    // More than `Tuning::trim_released` (1,024) connections, each with a queue (the
    // `subscribed` reply) that is freed after a quiet second.
    let mut clients: Vec<_> = (0..1100).map(|_| node.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.subscribe(&format!("idle.{}", i % 50));
    }
    wait_for("a trim", Duration::from_secs(10), || {
        (metric(node.addr, "fanout_memory_trims_total") >= 1.0).then_some(())
    });
    // At most one per interval (10 s), however many ticks free queues.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric(node.addr, "fanout_memory_trims_total"), 1.0);
    let mut publisher = node.client();
    publisher.publish("idle.7", "1");
    assert_eq!(
        clients[7].expect_json(),
        serde_json::json!({"channel":"idle.7","data":1})
    );
}
