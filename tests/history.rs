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
    let node = TestNode::with_redis(&redis, &["--history-size", "100000"]);
    let publisher = TestNode::with_redis(&redis, &["--history-size", "100000"]);
    let ch = "hist:cut";
    let mut a = node.client();
    subscribe(&mut a, ch, None);
    // Fast enough that messages arrive live while a repair read is in flight (the
    // hand-over must drop those the read already brought).
    let total = 4000u64;
    let addr = publisher.addr;
    let pub_thread = std::thread::spawn(move || {
        let mut n = 0;
        while n < total {
            let batch: Vec<Value> = (n + 1..=(n + 20).min(total))
                .map(|i| json!({"channel":ch,"data":{"n":i}}))
                .collect();
            n += batch.len() as u64;
            let r = post(addr, "/api/publish", &Value::Array(batch).to_string(), "");
            assert_eq!(r.status, 202);
            std::thread::sleep(Duration::from_millis(4));
        }
    });
    // Cut the node's pub/sub connection while the stream flows.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(150));
        let killed: i64 = redis_cmd(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert!(killed >= 1);
    }
    pub_thread.join().unwrap();
    for n in 1..=total {
        let v = a
            .recv_json(DEADLINE)
            .unwrap_or_else(|| panic!("message {n} never came"));
        assert_ne!(v["type"], "gap", "repaired, not announced: {v}");
        assert_eq!(v["data"]["n"], n, "in order, exactly once: {v}");
    }
    a.expect_silence(Duration::from_millis(300));
    let reconnects = support::metric(node.addr, "fanout_broker_reconnects_total");
    assert!(reconnects >= 4.0, "the subscriber was cut: {reconnects}");
    let repairs = support::metric(node.addr, "fanout_history_repairs_total");
    assert!(repairs >= 4.0, "each cut was repaired: {repairs}");
    assert_eq!(support::metric(node.addr, "fanout_history_gaps_total"), 0.0);
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

/// A tiny deterministic random source (xorshift), one per subscriber thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration uniformly in [lo, hi) milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// Issue #11's churn test: 200 subscribers on 2 nodes over 20 channels, 100 publishes/s
/// for 30 s; every subscriber drops its connection every 1–4 s, stays away 0.5–2 s and
/// resubscribes with `since` on the other node. Every subscriber must receive every
/// message of its channel exactly once, in order.
#[test]
fn churning_subscribers_resuming_on_either_node_receive_everything_exactly_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};

    const SUBS: usize = 200;
    const CHANNELS: u64 = 20;
    const RATE: u64 = 100;
    const SECS: u64 = 30;
    const PER_CHANNEL: u64 = RATE * SECS / CHANNELS;

    let redis = RedisProcess::start();
    let nodes: Vec<TestNode> = (0..2)
        .map(|_| TestNode::with_redis(&redis, &["--history-size", "10000"]))
        .collect();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let ready = Arc::new(Barrier::new(SUBS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let subscribers: Vec<_> = (0..SUBS)
        .map(|i| {
            let (ready, done, addrs) = (ready.clone(), done.clone(), addrs.clone());
            std::thread::spawn(move || {
                let ch = format!("churn{}", i as u64 % CHANNELS);
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0x1000_0001));
                let mut node = i % 2;
                let connect = |node: usize| WsClient::connect(&format!("ws://{}/", addrs[node]));
                let mut c = connect(node);
                let mut offset = subscribe(&mut c, &ch, None)["offset"]
                    .as_str()
                    .unwrap()
                    .to_string();
                ready.wait();
                let (mut seen, mut resumes) = (0u64, 0u32);
                let finish = std::time::Instant::now() + Duration::from_secs(SECS + 30);
                while seen < PER_CHANNEL {
                    assert!(
                        std::time::Instant::now() < finish,
                        "{ch} sub {i}: stuck at {seen}"
                    );
                    let online_until = std::time::Instant::now() + rng.ms(1000, 4000);
                    loop {
                        let left =
                            online_until.saturating_duration_since(std::time::Instant::now());
                        let Some(v) = c.recv_json(left) else { break };
                        assert!(v.get("type").is_none(), "{ch} sub {i}: unexpected {v}");
                        let n = v["data"]["n"].as_u64().unwrap();
                        assert_eq!(n, seen + 1, "{ch} sub {i}: after {resumes} resumes");
                        seen = n;
                        offset = v["offset"].as_str().unwrap().to_string();
                        if seen == PER_CHANNEL {
                            break;
                        }
                    }
                    if seen == PER_CHANNEL {
                        break;
                    }
                    if !done.load(Ordering::Relaxed) {
                        // Drop the connection (no close handshake), stay away, come
                        // back on the other node.
                        drop(c);
                        std::thread::sleep(rng.ms(500, 2000));
                        node = 1 - node;
                        c = connect(node);
                        subscribe(&mut c, &ch, Some(&offset));
                        resumes += 1;
                    }
                }
                resumes
            })
        })
        .collect();
    ready.wait();
    // 100 publishes/s, alternating nodes, each channel numbered 1..=PER_CHANNEL.
    let start = std::time::Instant::now();
    for k in 0..RATE * SECS {
        let ch = format!("churn{}", k % CHANNELS);
        let n = k / CHANNELS + 1;
        let body = json!({"channel":ch,"data":{"n":n}}).to_string();
        let r = post(addrs[(k % 2) as usize], "/api/publish", &body, "");
        assert_eq!(r.status, 202, "{}", r.body);
        let due = start + Duration::from_millis((k + 1) * 1000 / RATE);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    done.store(true, Ordering::Relaxed);
    let resumes: u32 = subscribers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        resumes as usize >= SUBS * 5,
        "every subscriber churned: {resumes} resumes"
    );
}

/// Redis restarted under a node: without persistence the streams are gone, so both a
/// subscriber that stayed and one that resumes get `gap` (never a replay of another
/// epoch's offsets); with AOF nothing is lost and nobody gets `gap`.
fn redis_restart(persist: bool) {
    let redis_args: &[&str] = if persist {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &[]
    };
    let mut redis = RedisProcess::start_with(redis_args);
    let node = TestNode::with_redis(&redis, &["--history-size", "100"]);
    let ch = "hist:restart";
    let mut stays = node.client();
    subscribe(&mut stays, ch, None);
    let mut leaves = node.client();
    subscribe(&mut leaves, ch, None);
    for n in 1..=3 {
        publish(&node, ch, n);
    }
    let mut offset = String::new();
    for n in 1..=3 {
        assert_eq!(next(&mut stays, ch).0, n);
        let (got, off) = next(&mut leaves, ch);
        assert_eq!(got, n);
        offset = off;
    }
    drop(leaves);
    redis.kill();
    redis.restart();
    wait_for("the node to be healthy again", DEADLINE, || {
        (get(node.addr, "/healthz").status == 200).then_some(())
    });
    for n in 4..=5 {
        publish(&node, ch, n);
    }
    let mut back = node.client();
    subscribe(&mut back, ch, Some(&offset));
    for c in [&mut stays, &mut back] {
        if !persist {
            assert_eq!(c.expect_json(), json!({"type":"gap","channel":ch}));
        }
        for n in 4..=5 {
            assert_eq!(next(c, ch).0, n, "persist={persist}");
        }
        c.expect_silence(Duration::from_millis(300));
    }
    let told = support::metric(node.addr, "fanout_history_gaps_total");
    assert_eq!(told > 0.0, !persist, "history gaps counted: {told}");
}

#[test]
fn redis_restarted_without_persistence_means_gap_never_a_wrong_replay() {
    redis_restart(false);
}

#[test]
fn redis_restarted_with_aof_loses_nothing() {
    redis_restart(true);
}

/// A shard's delivery queue overflowing (a burst larger than it, here a queue of 8)
/// makes the router drop and owe a `gap`; on a history channel the shard reads what it
/// missed from history instead, so the subscriber gets every message, in order, and no
/// `gap`. Without history the same burst announces the loss.
#[test]
fn an_overflowing_shard_queue_is_repaired_from_history() {
    for history in [true, false] {
        let redis = RedisProcess::start();
        let size = if history { "10000" } else { "0" };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"));
        cmd.args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
            .args(["--history-size", size, "--shards", "1"])
            .env("FANOUT_TEST_SHARD_QUEUE", "8");
        let node = TestNode::spawn(cmd);
        let ch = "burst";
        let mut a = node.client();
        a.send(&json!({"type":"subscribe","channel":ch}).to_string());
        assert_eq!(a.expect_json()["type"], "subscribed");
        let total = 2000u64;
        for chunk in (1..=total).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|n| json!({"channel":ch,"data":{"n":n}}))
                .collect();
            let r = post(
                node.addr,
                "/api/publish",
                &Value::Array(batch).to_string(),
                "",
            );
            assert_eq!(r.status, 202);
        }
        let dropped = support::metric(node.addr, "fanout_dispatch_dropped_total");
        assert!(dropped > 0.0, "the burst overflowed the queue of 8");
        let mut seen = 0;
        let mut gaps = 0;
        while let Some(v) = a.recv_json(Duration::from_secs(2)) {
            if v["type"] == "gap" {
                gaps += 1;
                continue;
            }
            let n = v["data"]["n"].as_u64().unwrap();
            assert!(n > seen, "in order");
            if history {
                assert_eq!(n, seen + 1, "nothing missing: {v}");
            }
            seen = n;
            if seen == total {
                break;
            }
        }
        if history {
            assert_eq!((seen, gaps), (total, 0), "repaired from history");
            assert!(support::metric(node.addr, "fanout_history_repairs_total") > 0.0);
        } else {
            assert!(gaps > 0, "without history the loss is announced");
        }
    }
}
