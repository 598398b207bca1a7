//! Bad input from a client gets the right error code and leaves the connection usable.

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, RedisProcess, TestNode, DEADLINE};
use serde_json::json;
use support::{get, post};
use tungstenite::Message;

#[test]
fn each_bad_message_gets_its_error_code_and_the_connection_survives() {
    let node = TestNode::start(&["--max-message", "1024", "--max-subscriptions", "2"]);
    let long_channel = "x".repeat(257);
    let cases: Vec<(&str, Message, &str)> = vec![
        ("not json", Message::text("hello"), "bad_json"),
        (
            "truncated json",
            Message::text(r#"{"type":"subscribe""#),
            "bad_json",
        ),
        ("array", Message::text("[1,2,3]"), "bad_request"),
        (
            "missing type",
            Message::text(r#"{"channel":"a"}"#),
            "bad_request",
        ),
        (
            "type not a string",
            Message::text(r#"{"type":1,"channel":"a"}"#),
            "bad_request",
        ),
        (
            "unknown type",
            Message::text(r#"{"type":"dance","channel":"a"}"#),
            "unknown_type",
        ),
        (
            "missing channel",
            Message::text(r#"{"type":"subscribe"}"#),
            "bad_channel",
        ),
        (
            "channel not a string",
            Message::text(r#"{"type":"subscribe","channel":5}"#),
            "bad_channel",
        ),
        (
            "empty channel",
            Message::text(r#"{"type":"subscribe","channel":""}"#),
            "bad_channel",
        ),
        (
            "control char in channel",
            Message::text(r#"{"type":"subscribe","channel":"a\u0001"}"#),
            "bad_channel",
        ),
        (
            "channel too long",
            Message::text(format!(
                r#"{{"type":"subscribe","channel":"{long_channel}"}}"#
            )),
            "bad_channel",
        ),
        (
            "publish without data",
            Message::text(r#"{"type":"publish","channel":"a"}"#),
            "bad_request",
        ),
        (
            "id of a bad type",
            Message::text(r#"{"type":"publish","channel":"a","data":1,"id":[1]}"#),
            "bad_request",
        ),
        (
            "null id",
            Message::text(r#"{"type":"publish","channel":"a","data":1,"id":null}"#),
            "bad_request",
        ),
        (
            "null id on a subscribe",
            Message::text(r#"{"type":"subscribe","channel":"a","id":null}"#),
            "bad_request",
        ),
        (
            "binary frame",
            Message::binary(vec![1u8, 2, 3]),
            "bad_request",
        ),
        (
            "oversized message",
            Message::text(format!(
                r#"{{"type":"publish","channel":"a","data":"{}"}}"#,
                "y".repeat(2000)
            )),
            "too_large",
        ),
    ];
    let mut c = node.client();
    for (name, msg, code) in cases {
        c.ws.send(msg).unwrap();
        let v = c.expect_json();
        assert_eq!(v["type"], "error", "{name}: {v}");
        assert_eq!(v["code"], code, "{name}: {v}");
        assert!(v["message"].is_string(), "{name}: {v}");
    }
    // The same connection still works.
    c.subscribe("ok");
    c.publish("ok", r#"{"still":"alive"}"#);
    assert_eq!(
        c.expect_json(),
        json!({"channel":"ok","data":{"still":"alive"}})
    );
    // The subscription limit is enforced (2 here) and reported on the channel.
    c.subscribe("ok2");
    c.send(r#"{"type":"subscribe","channel":"ok3"}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["channel"].as_str()),
        (Some("bad_request"), Some("ok3"))
    );
    // Errors carry the request id.
    c.send(r#"{"type":"publish","channel":"","data":1,"id":"q"}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["id"].as_str()),
        (Some("bad_channel"), Some("q"))
    );
}

#[test]
fn protocol_violations_close_with_the_rfc_code() {
    use fanout::ws::inbound::client_frame;
    use std::io::{Read, Write};
    let node = TestNode::start(&[]);
    let mask = [7, 7, 7, 7];
    // A header announcing 2 MiB (16 × the 64 KiB limit is 1 MiB): refused at once.
    let mut huge_header = vec![0x81, 0x80 | 127];
    huge_header.extend_from_slice(&(2u64 << 20).to_be_bytes());
    huge_header.extend_from_slice(&mask);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", client_frame(0x3, true, b"", mask), 1002),
        (
            "invalid UTF-8",
            client_frame(1, true, &[0xc3, 0x28], mask),
            1007,
        ),
        ("far too big", huge_header, 1009),
    ];
    for (name, bytes, code) in cases {
        // A raw socket: upgrade by hand, then misbehave.
        let mut s = common::raw_upgrade(node.addr);
        s.write_all(&bytes).unwrap();
        let mut frame = [0u8; 4];
        s.read_exact(&mut frame).unwrap();
        assert_eq!(frame[0], 0x88, "{name}: a close frame");
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), code, "{name}");
        // Then the server closes the socket.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
}

#[test]
fn plain_http_gets_an_answer_not_a_hang() {
    use std::io::{Read, Write};
    let node = TestNode::start(&[]);
    for (req, status) in [
        (
            "GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
            "200",
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
            "426",
        ),
        ("BREW /pot HTTP/1.1\r\nConnection: close\r\n\r\n", "404"),
        ("\x16\x03\x01garbage\r\n\r\n", "400"),
    ] {
        let mut s = std::net::TcpStream::connect(node.addr).unwrap();
        s.set_read_timeout(Some(common::DEADLINE)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}")),
            "{req:?} → {out}"
        );
    }
}

/// The node's own probe channel, `__fanout:probe:<server-id>:<pid>`.
fn probe_channel(node: &TestNode, server_id: &str) -> String {
    format!(
        "{}{server_id}:{}",
        fanout::protocol::channel::PROBE_PREFIX,
        node.pid()
    )
}

#[test]
fn clients_cannot_touch_the_reserved_probe_channels() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--server-id", "probe-node"]);
    wait_for("node healthy", DEADLINE, || {
        (get(node.addr, "/healthz").status == 200).then_some(())
    });
    let probe = probe_channel(&node, "probe-node");
    redis.wait_numsub(&probe, 1);
    let mut c = node.client();
    for (kind, extra) in [
        ("subscribe", ""),
        ("unsubscribe", ""),
        ("publish", r#","data":"1""#),
        ("subscribe", r#","id":"s1""#),
    ] {
        let text = format!(
            r#"{{"type":"{kind}","channel":{}{extra}}}"#,
            serde_json::to_string(&probe).unwrap()
        );
        c.send(&text);
        let v = c.expect_json();
        assert_eq!(v["type"], "error", "{text}: {v}");
        assert_eq!(v["code"], "bad_channel", "{text}: {v}");
        assert_eq!(v["channel"].as_str(), Some(probe.as_str()), "{text}: {v}");
    }
    // Any name under the prefix, not only this node's.
    c.send(r#"{"type":"subscribe","channel":"__fanout:probe:other:1"}"#);
    assert_eq!(c.expect_json()["code"], "bad_channel");
    // The HTTP API refuses it too, alone or inside a batch (nothing of it published).
    let body = json!({"channel": probe, "data": 1}).to_string();
    let r = post(node.addr, "/api/publish", &body, "");
    assert_eq!(r.status, 400, "{r:?}");
    let batch = json!([{"channel":"fine","data":1},{"channel":probe,"data":2}]).to_string();
    assert_eq!(post(node.addr, "/api/publish", &batch, "").status, 400);
    // Names that only resemble the prefix are ordinary channels.
    c.subscribe("__fanout:probe");
    c.subscribe("x__fanout:probe:");
    // The node's probe is intact: still subscribed in Redis, health still green.
    assert_eq!(redis.numsub(&probe), 1);
    c.expect_silence(Duration::from_millis(100));
    assert_eq!(get(node.addr, "/healthz").status, 200);
}

#[test]
fn reserved_prefix_is_refused_in_embedded_mode_too() {
    let node = TestNode::start(&[]);
    let mut c = node.client();
    c.send(r#"{"type":"publish","channel":"__fanout:probe:a:1","data":1,"id":7}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["id"].as_i64()),
        (Some("bad_channel"), Some(7)),
        "{v}"
    );
    let r = post(
        node.addr,
        "/api/publish",
        r#"{"channel":"__fanout:probe:a:1","data":1}"#,
        "",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["error"].as_str().unwrap().contains("reserved"),
        "{r:?}"
    );
}
