//! History and resume (issue #11), on real nodes, embedded and with a real Redis:
//! offsets on deliveries and on `subscribed`, `since` replays exactly what was missed
//! and hands over to live messages with no duplicate and no hole, a position history
//! no longer has gets `gap` then the rest, `history` over WebSocket and HTTP, and the
//! node repairs its own gaps when its Redis subscriber is cut.

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, ConfigFile, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::{json, Value};
use support::{get, post, redis_cmd};

/// Subscribes (optionally resuming) and returns the `subscribed` reply.
fn subscribe(c: &mut WsClient, channel: &str, since: Option<&str>) -> Value {
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
fn publish(node: &TestNode, channel: &str, n: u64) {
    let body = json!({"channel":channel,"data":{"n":n}}).to_string();
    let r = post(node.addr, "/api/publish", &body, "");
    assert_eq!(r.status, 202, "{}", r.body);
}

/// The next delivery on `channel`: (n, offset). Panics on anything else.
fn next(c: &mut WsClient, channel: &str) -> (u64, String) {
    let v = c.expect_json();
    assert_eq!(v["channel"], channel, "expected a delivery, got {v}");
    assert!(v.get("type").is_none(), "expected a delivery, got {v}");
    let n = v["data"]["n"].as_u64().unwrap_or_else(|| panic!("{v}"));
    let offset = v["offset"]
        .as_str()
        .unwrap_or_else(|| panic!("no offset: {v}"));
    (n, offset.to_string())
}

fn protocol(node: &TestNode, other: &TestNode) {
    let ch = "hist:a";
    let mut a = node.client();
    let sub = subscribe(&mut a, ch, None);
    let start = sub["offset"]
        .as_str()
        .expect("subscribed carries an offset")
        .to_string();
    for n in 1..=3 {
        publish(other, ch, n);
    }
    let mut offsets = vec![start.clone()];
    for n in 1..=3 {
        let (got, off) = next(&mut a, ch);
        assert_eq!(got, n);
        assert!(!offsets.contains(&off), "offsets are distinct");
        offsets.push(off);
    }
    drop(a);
    for n in 4..=7 {
        publish(other, ch, n);
    }
    // Resume after 3: exactly 4..=7, then live 8, nothing twice.
    let mut b = node.client();
    let sub = subscribe(&mut b, ch, Some(&offsets[3]));
    assert!(sub["offset"].is_string());
    for n in 4..=7 {
        assert_eq!(next(&mut b, ch).0, n);
    }
    publish(other, ch, 8);
    let (n8, off8) = next(&mut b, ch);
    assert_eq!(n8, 8);
    b.expect_silence(Duration::from_millis(300));
    // From the offset of an empty channel: everything.
    let mut c = node.client();
    subscribe(&mut c, ch, Some(&start));
    for n in 1..=8 {
        assert_eq!(next(&mut c, ch).0, n);
    }
    // From the newest: nothing but what comes next.
    let mut d = node.client();
    let sub = subscribe(&mut d, ch, Some(&off8));
    assert_eq!(sub["offset"], off8.as_str(), "the channel is at 8");
    d.expect_silence(Duration::from_millis(300));

    // `since` on a channel without history is refused; the connection stays usable.
    d.send(r#"{"type":"subscribe","channel":"plain","since":"1-0:1"}"#);
    let v = d.expect_json();
    assert_eq!(
        (&v["type"], &v["code"]),
        (&json!("error"), &json!("bad_request")),
        "{v}"
    );
    d.subscribe("plain");

    // History over WebSocket: the newest 3, then a page after an offset, id echoed.
    d.send(&json!({"type":"history","channel":ch,"limit":3,"id":"h1"}).to_string());
    let v = d.expect_json();
    assert_eq!(v["type"], "history", "{v}");
    assert_eq!(v["id"], "h1");
    let ns: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![6, 7, 8]);
    d.send(&json!({"type":"history","channel":ch,"since":offsets[1],"limit":2}).to_string());
    let v = d.expect_json();
    let ns: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![2, 3]);
    d.send(r#"{"type":"history","channel":"plain"}"#);
    assert_eq!(d.expect_json()["code"], "bad_request");

    // And over HTTP.
    let since = offsets[2].replace(':', "%3A");
    let r = get(
        node.addr,
        &format!("/api/channels/hist:a/history?since={since}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let ns: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (3..=8).collect::<Vec<_>>());
    assert_eq!(get(node.addr, "/api/channels/plain/history").status, 400);
    assert_eq!(
        get(node.addr, "/api/channels/hist:a/history?since=x").status,
        400
    );
}

/// History on `hist:` channels only.
const HIST_ONLY: &str = "[[namespace]]\nprefix = \"hist:\"\nhistory_size = 100\n";

#[test]
fn embedded_offsets_resume_and_history() {
    let cfg = ConfigFile::new("hist", HIST_ONLY);
    let node = TestNode::start(&["--config", cfg.path()]);
    protocol(&node, &node);
}

#[test]
fn redis_offsets_resume_and_history_across_nodes() {
    let redis = RedisProcess::start();
    let cfg = ConfigFile::new("hist", HIST_ONLY);
    let a = TestNode::with_redis(&redis, &["--config", cfg.path()]);
    let b = TestNode::with_redis(&redis, &["--config", cfg.path()]);
    protocol(&a, &b);
    // Plain channels are untouched: no offset, byte for byte as before.
    let mut c = a.client();
    c.subscribe("plain2");
    publish(&b, "plain2", 1);
    assert_eq!(c.expect_json(), json!({"channel":"plain2","data":{"n":1}}));
}

/// A position older than what history keeps: `gap`, then what history still has.
fn trimmed(node: &TestNode, total: u64) {
    let ch = "hist:t";
    let mut a = node.client();
    subscribe(&mut a, ch, None);
    publish(node, ch, 1);
    let (_, first) = next(&mut a, ch);
    drop(a);
    for n in 2..=total {
        publish(node, ch, n);
    }
    let mut b = node.client();
    subscribe(&mut b, ch, Some(&first));
    let v = b.expect_json();
    assert_eq!(v, json!({"type":"gap","channel":ch}));
    let mut last = 0;
    let mut count = 0;
    loop {
        let (n, _) = next(&mut b, ch);
        assert!(n > last, "in order");
        last = n;
        count += 1;
        if n == total {
            break;
        }
    }
    assert!(count < total - 1, "trimmed: got {count} of {}", total - 1);
    b.expect_silence(Duration::from_millis(300));
}

#[test]
fn embedded_trimmed_offset_gets_gap_then_the_rest() {
    let node = TestNode::start(&["--history-size", "5"]);
    trimmed(&node, 20);
}

#[test]
fn redis_trimmed_offset_gets_gap_then_the_rest() {
    // `MAXLEN ~` trims whole stream nodes (100 entries): publish well past that.
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--history-size", "5"]);
    trimmed(&node, 350);
}

#[test]
fn cut_subscriber_connection_is_repaired_without_gap() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--history-size", "1000"]);
    let publisher = TestNode::with_redis(&redis, &["--history-size", "1000"]);
    let ch = "hist:cut";
    let mut a = node.client();
    subscribe(&mut a, ch, None);
    let total = 400u64;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = publisher.addr;
    let pub_thread = std::thread::spawn(move || {
        for n in 1..=total {
            let body = json!({"channel":ch,"data":{"n":n}}).to_string();
            assert_eq!(post(addr, "/api/publish", &body, "").status, 202);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Cut the node's pub/sub connection twice while the stream flows.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(600));
        let killed: i64 = redis_cmd(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed >= 1);
    }
    pub_thread.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in 1..=total {
        let v = a
            .recv_json(DEADLINE)
            .unwrap_or_else(|| panic!("message {n} never came"));
        assert_ne!(v["type"], "gap", "repaired, not announced: {v}");
        assert_eq!(v["data"]["n"], n, "in order, exactly once: {v}");
    }
    a.expect_silence(Duration::from_millis(300));
    let reconnects = support::metric(node.addr, "fanout_broker_reconnects_total");
    assert!(reconnects >= 2.0, "the subscriber was cut: {reconnects}");
}

#[test]
fn resume_while_publishing_fast_hands_over_without_duplicate_or_hole() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--history-size", "100000"]);
    let ch = "hist:fast";
    // A first subscriber keeps the channel live on the node (the hand-over then joins
    // a channel that is already receiving), a second one resumes again and again.
    let mut keeper = node.client();
    let start = subscribe(&mut keeper, ch, None)["offset"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = node.addr;
    let total = 3000u64;
    let pub_thread = std::thread::spawn(move || {
        let mut n = 0;
        while n < total {
            let batch: Vec<Value> = (n + 1..=(n + 20).min(total))
                .map(|i| json!({"channel":ch,"data":{"n":i}}))
                .collect();
            n += batch.len() as u64;
            let r = post(addr, "/api/publish", &Value::Array(batch).to_string(), "");
            assert_eq!(r.status, 202);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut seen = 0u64;
    let mut offset = Some(start);
    let mut resumes = 0;
    while seen < total {
        let mut c = node.client();
        subscribe(&mut c, ch, offset.as_deref());
        resumes += 1;
        // Read a few hundred, then drop the connection mid-stream.
        for _ in 0..250 {
            let (n, off) = next(&mut c, ch);
            assert_eq!(
                n,
                seen + 1,
                "no duplicate, no hole (after {resumes} resumes)"
            );
            seen = n;
            offset = Some(off);
            if seen == total {
                break;
            }
        }
    }
    pub_thread.join().unwrap();
    assert!(resumes >= 5, "{resumes}");
    wait_for("the keeper to see everything", DEADLINE, || {
        let mut last = 0;
        while let Some(v) = keeper.recv_json(Duration::from_millis(200)) {
            last = v["data"]["n"].as_u64().unwrap_or(last);
        }
        (last == total).then_some(())
    });
}
