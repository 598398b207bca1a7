//! Client bytes reach the parser whatever shape the socket delivers them in: a byte at a
//! time with pauses (each byte its own event after a short read), a burst many times the
//! shard's 64 KiB read buffer in one write, and data followed at once by the peer's FIN.
//! These guard the read loop's short-read rule (a read that does not fill the buffer ends
//! the loop; the next bytes arrive as a new edge-triggered event).

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::{TestNode, DEADLINE};
use fanout::ws::inbound::client_frame;

const MASK: [u8; 4] = [1, 2, 3, 4];

fn text(s: &str) -> Vec<u8> {
    client_frame(1, true, s.as_bytes(), MASK)
}

/// Reads one server frame (unmasked, as servers send) and returns its payload as text.
fn read_text(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    let mut len = (h[1] & 0x7f) as usize;
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).unwrap();
        len = u16::from_be_bytes(l) as usize;
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l).unwrap();
        len = u64::from_be_bytes(l) as usize;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn a_request_dribbled_one_byte_at_a_time_is_read() {
    let node = TestNode::start(&[]);
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut bytes = common::UPGRADE_REQUEST.to_vec();
    bytes.extend(text(r#"{"type":"subscribe","channel":"drip"}"#));
    for b in bytes {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut s, &mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    assert_eq!(
        read_text(&mut s),
        r#"{"type":"subscribed","channel":"drip"}"#
    );
}

#[test]
fn a_burst_larger_than_the_read_buffer_is_read_to_the_end() {
    let node = TestNode::start(&[]);
    let mut sub = node.client();
    sub.subscribe("burst");
    let mut publisher = common::raw_upgrade(node.addr);
    // 4,000 publishes of ~120 bytes: ~480 KiB in one write, several full reads.
    let n = 4000;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend(text(&format!(
            r#"{{"type":"publish","channel":"burst","data":{{"i":{i},"pad":"{}"}}}}"#,
            "x".repeat(60)
        )));
    }
    assert!(burst.len() > 6 * 64 * 1024);
    publisher.write_all(&burst).unwrap();
    for i in 0..n {
        let v = sub.recv_json(DEADLINE).expect("delivery");
        assert_eq!(v["data"]["i"], i, "in order, none lost");
    }
}

#[test]
fn data_followed_by_fin_is_still_handled() {
    let node = TestNode::start(&[]);
    let mut sub = node.client();
    sub.subscribe("fin");
    for i in 0..20 {
        let mut publisher = common::raw_upgrade(node.addr);
        let frame = text(&format!(
            r#"{{"type":"publish","channel":"fin","data":{i}}}"#
        ));
        publisher.write_all(&frame).unwrap();
        publisher.shutdown(Shutdown::Write).unwrap();
        let v = sub.recv_json(DEADLINE).expect("delivery");
        assert_eq!(v["data"], i);
    }
}
