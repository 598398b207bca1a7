//! History test helpers: subscribe (optionally resuming), publish numbered messages
//! through the HTTP API, read the next numbered delivery with its offset.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::post;
use crate::common::{TestNode, WsClient};

/// Subscribes (optionally resuming) and returns the `subscribed` reply.
pub fn subscribe(c: &mut WsClient, channel: &str, since: Option<&str>) -> Value {
    let mut cmd = json!({"type":"subscribe","channel":channel});
    if let Some(s) = since {
        cmd["since"] = json!(s);
    }
    c.send(&cmd.to_string());
    let v = c.expect_json();
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(v["channel"], channel);
    v
}

/// Publishes `{"n":N}` through the HTTP API.
pub fn publish(node: &TestNode, channel: &str, n: u64) {
    let body = json!({"channel":channel,"data":{"n":n}}).to_string();
    let r = post(node.addr, "/api/publish", &body, "");
    assert_eq!(r.status, 202, "{}", r.body);
}

/// The next delivery on `channel`: (n, offset). Panics on anything else.
pub fn next(c: &mut WsClient, channel: &str) -> (u64, String) {
    let v = c.expect_json();
    assert_eq!(v["channel"], channel, "expected a delivery, got {v}");
    assert!(v.get("type").is_none(), "expected a delivery, got {v}");
    let n = v["data"]["n"].as_u64().unwrap_or_else(|| panic!("{v}"));
    let offset = v["offset"]
        .as_str()
        .unwrap_or_else(|| panic!("no offset: {v}"));
    (n, offset.to_string())
}

/// Publishes `{"n":1}` … `{"n":total}` on `channel` through `addr`'s HTTP API from a
/// thread, in batches of 20 with `pause` between batches.
pub fn publish_stream(
    addr: SocketAddr,
    channel: &'static str,
    total: u64,
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0;
        while n < total {
            let batch: Vec<Value> = (n + 1..=(n + 20).min(total))
                .map(|i| json!({"channel":channel,"data":{"n":i}}))
                .collect();
            n += batch.len() as u64;
            let r = post(addr, "/api/publish", &Value::Array(batch).to_string(), "");
            assert_eq!(r.status, 202);
            std::thread::sleep(pause);
        }
    })
}

/// The `n` of each message of a history answer.
pub fn numbers(answer: &Value) -> Vec<u64> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {answer}"))
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect()
}
