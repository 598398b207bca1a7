//! Integration: the Redis publisher path against a real `redis-server` (started on a
//! free port, killed on drop): every PUBLISH is answered and counted, and a plain
//! SUBSCRIBE client receives loadgen payloads in per-publisher sequence order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use loadgen::clock::now_ns;
use loadgen::net::parse_redis_url;
use loadgen::publisher::{self, PubPlan, PubShared, Via};
use loadgen::redis_pub::{encode_command, parse_reply};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server must be installed");
        // Wait for the ready line (an event), bounded by the child's own lifetime.
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let deadline = now_ns() + 20_000_000_000;
        loop {
            assert!(now_ns() < deadline, "redis-server did not become ready");
            match lines.next() {
                Some(Ok(l)) if l.contains("Ready to accept connections") => break,
                Some(Ok(_)) => {}
                _ => panic!("redis-server exited before it was ready"),
            }
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read one complete RESP reply from a blocking stream (buffer carried across calls).
fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Ok(Some((n, _))) = parse_reply(buf) {
            return buf.drain(..n).collect();
        }
        let mut tmp = [0u8; 65536];
        let n = s.read(&mut tmp).expect("read from redis");
        assert!(n > 0, "redis closed the subscriber connection");
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn redis_publish_path_counts_replies_and_delivers_in_order() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);

    let mut sub = TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
    sub.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut cmd = Vec::new();
    encode_command(&mut cmd, &[b"SUBSCRIBE", b"lgt.0"]);
    sub.write_all(&cmd).expect("subscribe");
    let mut buf = Vec::new();
    let confirm = read_reply(&mut sub, &mut buf);
    assert!(String::from_utf8_lossy(&confirm).contains("subscribe"));

    let sh = Arc::new(PubShared::default());
    let start = now_ns();
    let plan = PubPlan {
        json_payload: false,
        via: Via::Redis(parse_redis_url(&url).expect("url")),
        pubs: 2,
        channels: 1,
        prefix: "lgt".into(),
        payload: 100,
        rate: 0.0,
        window: 16,
        setup_deadline: start + 10_000_000_000,
        drain_ns: 2_000_000_000,
    };
    let t0 = now_ns();
    sh.t0.store(t0, Ordering::Release);
    sh.ws.store(t0, Ordering::Release);
    sh.we.store(t0 + 300_000_000, Ordering::Release);
    let sh2 = sh.clone();
    let res = std::thread::spawn(move || publisher::run(plan, sh2))
        .join()
        .expect("publisher thread");
    assert!(sh.failed.lock().expect("lock").is_none());
    assert!(
        res.published_total > 100,
        "published {}",
        res.published_total
    );
    assert_eq!(res.acked, res.published_total, "every PUBLISH answered");
    assert_eq!(res.errors, 0);
    assert_eq!(res.redis_zero_receivers, 0, "our SUBSCRIBE client counts");
    assert_eq!(res.outstanding_at_end, 0);
    assert_eq!(
        res.per_stream_total.iter().sum::<u64>(),
        res.published_total
    );
    assert!(sh.stopped.load(Ordering::Acquire));

    // The subscriber gets every message, in sequence order per stream.
    let mut next = [0u64; 2];
    for _ in 0..res.published_total {
        let msg = read_reply(&mut sub, &mut buf);
        let text = String::from_utf8_lossy(&msg).into_owned();
        let json_start = text.find("{\"p\":").expect("payload in message");
        let payload = text[json_start..].split("\r\n").next().expect("payload");
        assert_eq!(payload.len(), 100, "padded to --payload");
        let v: serde_json::Value = serde_json::from_str(payload).expect("payload is JSON");
        let p = v["p"].as_u64().expect("p") as usize;
        assert_eq!(v["s"].as_u64(), Some(next[p]), "in order for publisher {p}");
        next[p] += 1;
        assert!(v["t"].as_u64().expect("t") >= t0);
    }
    assert_eq!(next.iter().sum::<u64>(), res.published_total);
}
