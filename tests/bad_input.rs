//! Bad input from a client gets the right error code and leaves the connection usable.

mod common;

use common::TestNode;
use serde_json::json;
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
