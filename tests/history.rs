//! History and resume (issue #11), on real nodes, embedded and with a real Redis:
//! offsets on deliveries and on `subscribed`, `since` replays exactly what was missed
//! and hands over to live messages with no duplicate and no hole (also under load and
//! under churn across two nodes), a position history no longer has gets `gap` then the
//! rest, `history` over WebSocket and HTTP. The node's own repairs are in
//! `history_repair.rs`.

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, ConfigFile, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::json;
use support::history::{next, numbers, publish, publish_stream, subscribe};
use support::{get, post};

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

    // A publish with an id on a history channel is acked with its offset: the one its
    // delivery carries.
    d.send(&json!({"type":"publish","channel":ch,"data":{"n":9},"id":"p9"}).to_string());
    let (a, b) = (d.expect_json(), d.expect_json());
    let (ack, delivery) = if a["type"] == "published" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(ack["id"], "p9", "{ack}");
    assert_eq!(delivery["data"]["n"], 9, "{delivery}");
    assert!(ack["offset"].is_string(), "{ack}");
    assert_eq!(ack["offset"], delivery["offset"]);

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
    let ns = numbers(&v);
    assert_eq!(ns, vec![7, 8, 9]);
    d.send(&json!({"type":"history","channel":ch,"since":offsets[1],"limit":2}).to_string());
    let v = d.expect_json();
    let ns = numbers(&v);
    assert_eq!(ns, vec![2, 3]);
    d.send(r#"{"type":"history","channel":"plain"}"#);
    assert_eq!(d.expect_json()["code"], "bad_request");
    // Without history the ack is as before, byte for byte.
    d.send(r#"{"type":"publish","channel":"plain","data":1,"id":7}"#);
    let (a, b) = (d.expect_json(), d.expect_json());
    let ack = if a["type"] == "published" { a } else { b };
    assert_eq!(ack, json!({"type":"published","id":7}));

    // And over HTTP.
    let since = offsets[2].replace(':', "%3A");
    let r = get(
        node.addr,
        &format!("/api/channels/hist:a/history?since={since}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let ns = numbers(&v);
    assert_eq!(ns, (3..=9).collect::<Vec<_>>());
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
    let pub_thread = publish_stream(addr, ch, total, Duration::from_millis(2));
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

/// History reads are bounded per connection (each may read 10,000 messages): a client
/// asking 30 at once gets 20 answers and 10 `rate_limited`, and stays connected.
#[test]
fn history_reads_are_rate_limited_per_connection() {
    let node = TestNode::start(&["--history-size", "10"]);
    let mut c = node.client();
    for i in 0..30 {
        c.send(&json!({"type":"history","channel":"h","id":i}).to_string());
    }
    let (mut answers, mut limited) = (0, 0);
    for _ in 0..30 {
        let v = c.expect_json();
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("history"), _) => answers += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    assert_eq!((answers, limited), (20, 10));
    subscribe(&mut c, "h", None);
}
