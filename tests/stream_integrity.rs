//! Every byte a client receives parses: whole frames in order, a close frame last and
//! nothing after it, HTTP responses complete — under the slow-consumer policies, a peer
//! that half-closes, keep-alive, and a shutdown. Each test parses the stream the way a
//! strict client does (tests/wire), never searches it for bytes.

mod common;
mod support;
mod wire;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{wait_for, TestNode, DEADLINE};
use serde_json::Value;
use support::metric;
use wire::Frame;

/// A raw WebSocket subscribed to `channel` that reads exactly its `subscribed` reply and
/// then nothing until the test says so.
fn stalled_subscriber(node: &TestNode, channel: &str) -> TcpStream {
    // A small receive buffer, so the server's queue (not the kernel) holds the backlog.
    let mut s = common::raw_upgrade_small_buffer(node.addr, 4096);
    wire::send(
        &mut s,
        &wire::text(&format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#)),
    );
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a text frame");
    let mut body = vec![0u8; (head[1] & 0x7f) as usize];
    s.read_exact(&mut body).unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "subscribed", "{v}");
    s
}

/// Publishes `n` messages of ~4 KB to `channel` from a client that reads its replies.
fn flood(node: &TestNode, channel: &str, n: usize) {
    flood_marked(node, channel, n, "last")
}

/// `flood`, the last message's data being `marker`.
fn flood_marked(node: &TestNode, channel: &str, n: usize, marker: &str) {
    let mut publisher = node.client();
    let payload = format!("\"{}\"", "z".repeat(4000));
    for _ in 0..n {
        publisher.publish(channel, &payload);
    }
    publisher.send(&format!(
        r#"{{"type":"publish","channel":"{channel}","data":"{marker}","id":"last"}}"#
    ));
    wait_for("the last publish acknowledged", DEADLINE, || {
        let v = publisher.recv_json(DEADLINE)?;
        (v["type"] == "published").then_some(())
    });
}

fn is_delivery(f: &Frame, channel: &str) -> bool {
    matches!(f, Frame::Text(v) if v["channel"] == channel && v.get("type").is_none())
}

/// Defect 1: the close queued for a slow consumer used to drop the rest of a partly
/// written frame, so the 4000 bytes landed inside it. Now the stream is whole frames,
/// the last being close 4000 `slow consumer`, then EOF.
#[test]
fn slow_consumer_close_follows_whole_frames() {
    let node = TestNode::start(&["--outbound-limit", "65536", "--shards", "1"]);
    for round in 0..3 {
        let channel = format!("flood{round}");
        let mut stalled = stalled_subscriber(&node, &channel);
        flood(&node, &channel, 2000);
        wait_for("a slow-consumer close", DEADLINE, || {
            (metric(node.addr, "fanout_slow_consumer_closes_total") as usize > round).then_some(())
        });
        let frames = wire::parse_stream(&wire::read_to_eof(&mut stalled, DEADLINE));
        let (last, rest) = frames.split_last().expect("some frames");
        assert_eq!(
            last,
            &Frame::Close(Some((4000, "slow consumer".into()))),
            "round {round}"
        );
        assert!(
            rest.iter().all(|f| is_delivery(f, &channel)),
            "round {round}"
        );
    }
}

/// Defect 2: drop-oldest drops deliveries only — never replies, pongs or its own
/// notice — says so exactly once, keeps the newest message, and queues nothing after
/// the close frame.
#[test]
fn drop_oldest_drops_only_deliveries_and_nothing_follows_close() {
    let node = TestNode::start(&[
        "--outbound-limit",
        "65536",
        "--slow-consumer",
        "drop-oldest",
        "--shards",
        "1",
    ]);
    let mut stalled = stalled_subscriber(&node, "flood");
    // ~10 MB: more than the kernel's socket buffers take, so the queue is over the limit.
    flood(&node, "flood", 2500);
    // Replies asked for while over the limit, then more deliveries on top of them.
    wire::send(&mut stalled, &wire::control(9, b"p1"));
    wire::send(
        &mut stalled,
        &wire::text(r#"{"type":"subscribe","channel":"other"}"#),
    );
    flood_marked(&node, "flood", 1200, "newest");
    wait_for("dropped deliveries counted", DEADLINE, || {
        (metric(node.addr, "fanout_slow_consumer_dropped_total") > 0.0).then_some(())
    });
    // Read until the newest message (it may still be on its way to the shard), then
    // close and read the rest.
    let mut bytes = wire::read_until(&mut stalled, DEADLINE, |frames| {
        frames
            .iter()
            .any(|f| matches!(f, Frame::Text(v) if v["data"] == "newest"))
    });
    wire::send(&mut stalled, &wire::control(8, &1000u16.to_be_bytes()));
    bytes.extend(wire::read_to_eof(&mut stalled, DEADLINE));
    let frames = wire::parse_stream(&bytes);
    assert_eq!(metric(node.addr, "fanout_slow_consumer_closes_total"), 0.0);
    let others: Vec<&Frame> = frames.iter().filter(|f| !is_delivery(f, "flood")).collect();
    let notices = frames
        .iter()
        .filter(|f| matches!(f, Frame::Text(v) if v["code"] == "slow_consumer"))
        .count();
    assert_eq!(notices, 1, "exactly one slow_consumer notice");
    assert!(
        frames.contains(&Frame::Pong(b"p1".to_vec())),
        "the pong was dropped"
    );
    assert!(
        frames.iter().any(
            |f| matches!(f, Frame::Text(v) if v["type"] == "subscribed" && v["channel"] == "other")
        ),
        "the subscribed reply was dropped: {others:?}"
    );
    assert_eq!(
        frames.last(),
        Some(&Frame::Close(Some((1000, String::new()))))
    );
}

/// Defect 3: an HTTP answer larger than the WebSocket outbound limit is written whole
/// (it used to be replaced by WebSocket close bytes).
#[test]
fn http_answers_are_not_cut_by_the_websocket_outbound_limit() {
    let node = TestNode::start(&["--outbound-limit", "1024"]);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let bytes = wire::read_to_eof(&mut s, DEADLINE);
    let (status, _, body, used) = wire::http_response(&bytes);
    assert_eq!(status, 200);
    assert!(body.len() > 1024, "a large answer: {} bytes", body.len());
    assert_eq!(used, bytes.len(), "nothing after the response");
    assert!(String::from_utf8_lossy(&body).contains("fanout_connections"));
}

/// Defect 4: a request and the client's FIN in one read (`printf ... | nc -N`) still get
/// the answer, including a presence query answered later by the presence thread.
#[test]
fn a_request_followed_by_fin_still_gets_its_answer() {
    let node = TestNode::start(&[]);
    for path in ["/healthz", "/api/users/nobody/connections", "/metrics"] {
        for _ in 0..10 {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let bytes = wire::read_to_eof(&mut s, DEADLINE);
            assert!(!bytes.is_empty(), "{path}: no answer before the close");
            let (status, _, _, used) = wire::http_response(&bytes);
            assert_eq!(status, 200, "{path}");
            assert_eq!(used, bytes.len(), "{path}");
        }
    }
}

/// Keep-alive: pipelined requests are answered in order on one connection (HEAD without
/// a body), `Connection: close` ends it after its answer.
#[test]
fn http_keep_alive_answers_pipelined_requests_in_order() {
    let node = TestNode::start(&[]);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/users/u1/connections HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    // A request later on the same connection, then one that closes it.
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let bytes = wire::read_to_eof(&mut s, DEADLINE);
    let mut at = 0;
    let mut seen = Vec::new();
    for expect_body in [true, false, true, true, true] {
        let (status, head, body, used) = if expect_body {
            wire::http_response(&bytes[at..])
        } else {
            // A HEAD answer: the head alone, its Content-Length tells the GET's size.
            let end = bytes[at..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("head")
                + 4;
            let head = String::from_utf8_lossy(&bytes[at..at + end]).into_owned();
            (head[9..12].parse().unwrap(), head, Vec::new(), end)
        };
        seen.push((status, head.contains("Connection: keep-alive"), body.len()));
        at += used;
    }
    assert_eq!(at, bytes.len(), "nothing after the last response");
    let statuses: Vec<u16> = seen.iter().map(|s| s.0).collect();
    assert_eq!(statuses, [200, 200, 200, 426, 200]);
    let kept: Vec<bool> = seen.iter().map(|s| s.1).collect();
    assert_eq!(kept, [true, true, true, true, false]);
}

fn signal(pid: u32, sig: &str) {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Shutdown (SIGTERM and SIGINT): new connections are refused while the drain runs, a
/// connection whose close frame is still being written (a slow consumer) gets it whole,
/// open clients get 1001, and the node exits 0 once all that is written.
#[test]
fn shutdown_writes_what_is_owed_and_refuses_new_clients_during_the_drain() {
    for sig in ["-TERM", "-INT"] {
        let node = TestNode::start(&[
            "--outbound-limit",
            "65536",
            "--shards",
            "1",
            "--shutdown-timeout",
            "8",
        ]);
        let pid = node.pid();
        let mut stalled = stalled_subscriber(&node, "flood");
        flood(&node, "flood", 2000);
        wait_for("a slow-consumer close", DEADLINE, || {
            (metric(node.addr, "fanout_slow_consumer_closes_total") > 0.0).then_some(())
        });
        let mut open = node.client();
        open.subscribe("quiet");
        signal(pid, sig);
        match open.recv_message(DEADLINE) {
            Some(tungstenite::Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("{sig}: expected close 1001, got {other:?}"),
        }
        // The stalled client holds the drain open: the listener is closed meanwhile.
        wait_for("the listener closed during the drain", DEADLINE, || {
            TcpStream::connect(node.addr).is_err().then_some(())
        });
        assert!(
            alive(pid),
            "{sig}: the node exited before its drain was done"
        );
        let frames = wire::parse_stream(&wire::read_to_eof(&mut stalled, DEADLINE));
        assert_eq!(
            frames.last(),
            Some(&Frame::Close(Some((4000, "slow consumer".into())))),
            "{sig}"
        );
        wait_for("the node to exit", DEADLINE, || (!alive(pid)).then_some(()));
    }
}

/// Defect 9 (part): a request waiting for the presence thread's answer used to keep
/// appending whatever the client sent next; now it buffers at most a request's worth
/// (head + body limits) and drops a client that sends more.
#[test]
fn bytes_sent_behind_a_pending_presence_query_are_bounded() {
    let redis = common::RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--handshake-timeout", "5"]);
    let sleeper = redis.debug_sleep(4);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(b"GET /api/users/nobody/connections HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t = std::time::Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    // 4 MiB behind the request: far more than the 1 MiB + 8 KiB a request may hold.
    while sent < 4 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // the server dropped us: what this test wants
        }
    }
    let bytes = wire::read_to_eof(&mut s, DEADLINE);
    assert!(
        bytes.is_empty() && t.elapsed() < Duration::from_secs(2),
        "dropped while Redis still sleeps, not answered later ({:?}, {} bytes)",
        t.elapsed(),
        bytes.len()
    );
    sleeper.join().unwrap();
}

/// Defect 4 (shutdown part): a presence request still waiting for Redis when the node is
/// told to stop gets an answer (503) instead of a bare close.
#[test]
fn a_presence_request_pending_at_shutdown_gets_503() {
    let redis = common::RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shutdown-timeout", "5"]);
    let pid = node.pid();
    let sleeper = redis.debug_sleep(4);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(b"GET /api/users/nobody/connections HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(pid, "-TERM");
    let bytes = wire::read_to_eof(&mut s, DEADLINE);
    assert!(!bytes.is_empty(), "closed without an answer");
    let (status, _, body, _) = wire::http_response(&bytes);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    sleeper.join().unwrap();
}
