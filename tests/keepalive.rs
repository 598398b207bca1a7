//! Keepalive and handshake timeouts: silent or half-open sockets do not accumulate.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestNode;
use tungstenite::Message;

#[test]
fn a_slowloris_that_never_finishes_its_handshake_is_cut_off() {
    let node = TestNode::start(&["--handshake-timeout", "2"]);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut closed = false;
    // One header byte every 200 ms, never a blank line.
    for b in
        b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the server kept a half-sent handshake open");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn pings_are_sent_and_a_client_that_ignores_them_is_dropped() {
    let node = TestNode::start(&["--ping-interval", "1"]);
    // A client that answers pings (tungstenite does when it reads) stays.
    let mut good = node.client();
    good.subscribe("k");
    // A raw client that never answers, watched from another thread.
    let addr = node.addr;
    let bad = std::thread::spawn(move || {
        let mut bad = TcpStream::connect(addr).unwrap();
        bad.write_all(common::UPGRADE_REQUEST).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match bad.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (start.elapsed(), got)
    });
    // Meanwhile the well-behaved client reads (so tungstenite answers pings).
    let mut pings = 0;
    let end = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < end {
        if let Some(Message::Ping(_)) = good.recv_message(Duration::from_millis(100)) {
            pings += 1;
        }
    }
    assert!(pings >= 1);
    let (took, got) = bad.join().unwrap();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "dropped after {took:?}"
    );
    let after_head = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got[after_head], 0x89, "a ping was sent before the drop");
    good.publish("k", "1");
    assert_eq!(
        good.expect_json(),
        serde_json::json!({"channel":"k","data":1})
    );
}
