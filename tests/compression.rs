//! permessage-deflate (RFC 7692, `--compression on`) against real fanout processes and
//! raw sockets: what the upgrade answers for each offer, compressed deliveries that
//! inflate to exactly the plain subscriber's bytes, compressed client messages (whole
//! and fragmented), the bounded inflater (a zip bomb is closed 1009), RSV1 where it is
//! not allowed (1002), and one compression per message however many subscribers.

mod common;
mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{TestNode, DEADLINE};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Upgrades a raw socket with these extra header lines; returns the socket and the
/// `Sec-WebSocket-Extensions` answer, if any.
fn upgrade(addr: SocketAddr, extra: &str) -> (TcpStream, Option<String>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ext = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| v.trim().to_string())
    });
    (s, ext)
}

fn offer(s: &str) -> String {
    format!("Sec-WebSocket-Extensions: {s}\r\n")
}

/// One frame as a deflate client sees it: RSV1, opcode, payload (inflated when RSV1).
#[derive(Debug, Clone, PartialEq)]
struct Got {
    rsv1: bool,
    op: u8,
    wire_len: usize,
    payload: Vec<u8>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON")
    }
    fn close_code(&self) -> u16 {
        assert_eq!(self.op, 8, "{self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

/// An independent inflater (flate2 used directly, not fanout's code).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(input.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid deflate");
    assert_eq!(
        d.total_in() as usize,
        input.len(),
        "output buffer too small"
    );
    out
}

/// Raw deflate of `data`, sync-flushed, tail stripped (what a client sends).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with the first byte `b0` (FIN, RSV1, opcode).
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = fanout::ws::inbound::client_frame(b0 & 0x0f, b0 & 0x80 != 0, payload, [9, 8, 7, 6]);
    f[0] = b0;
    f
}

/// Reads frames until `done` says enough (panics past the deadline or on EOF).
fn read_frames(s: &mut TcpStream, mut done: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let (mut buf, mut got) = (Vec::new(), Vec::new());
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        while let Some((g, used)) = parse_one(&buf) {
            got.push(g);
            buf.drain(..used);
        }
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < end, "not done in time: {got:?}");
        match s.read(&mut chunk) {
            Ok(0) => panic!("server closed; got {got:?}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => panic!("reset; got {got:?}"),
            Err(e) => panic!("{e}"),
        }
    }
}

fn parse_one(b: &[u8]) -> Option<(Got, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[0] & 0x30, 0, "RSV2/RSV3 set");
    assert!(b[0] & 0x80 != 0, "fragmented server frame");
    assert_eq!(b[1] & 0x80, 0, "masked server frame");
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let raw = b.get(head..head + len)?;
    let rsv1 = b[0] & 0x40 != 0;
    let payload = if rsv1 { inflate(raw) } else { raw.to_vec() };
    let got = Got {
        rsv1,
        op: b[0] & 0x0f,
        wire_len: head + len,
        payload,
    };
    Some((got, head + len))
}

fn subscribe(s: &mut TcpStream, channel: &str) {
    let cmd = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
    s.write_all(&frame(0x81, cmd.as_bytes())).unwrap();
    let got = read_frames(s, |g| !g.is_empty());
    assert_eq!(got[0].json()["type"], "subscribed", "{got:?}");
}

/// A ~1 KB repetitive JSON value, like a market-data or chat payload.
fn payload_json(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"id":{i},"symbol":"ACME","price":101.25,"side":"buy","qty":100}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

#[test]
fn negotiation_follows_the_flag_and_the_offer() {
    let on = TestNode::start(&["--compression", "on"]);
    let off = TestNode::start(&[]);
    let cases: Vec<(String, Option<String>)> = vec![
        (String::new(), None),
        (offer("permessage-deflate"), Some(ANSWER.into())),
        (
            offer("permessage-deflate; client_max_window_bits"),
            Some(ANSWER.into()),
        ),
        (
            offer("permessage-deflate; client_max_window_bits=12; server_no_context_takeover"),
            Some(ANSWER.into()),
        ),
        (
            offer("permessage-deflate; server_max_window_bits=10"),
            Some(format!("{ANSWER}; server_max_window_bits=10")),
        ),
        (offer("permessage-deflate; server_max_window_bits=20"), None),
        (offer("permessage-deflate; unknown_param"), None),
        (offer("x-webkit-deflate-frame"), None),
        (
            offer("permessage-deflate; bogus, permessage-deflate; client_max_window_bits"),
            Some(ANSWER.into()),
        ),
        (
            format!(
                "{}{}",
                offer("permessage-deflate; server_max_window_bits=7"),
                offer("permessage-deflate; server_max_window_bits=9")
            ),
            Some(format!("{ANSWER}; server_max_window_bits=9")),
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(upgrade(on.addr, &extra).1, want, "on: {extra}");
        assert_eq!(upgrade(off.addr, &extra).1, None, "off: {extra}");
    }
}

#[test]
fn compressed_deliveries_inflate_to_the_plain_frames() {
    let node = TestNode::start(&["--compression", "on"]);
    let (mut plain, _) = upgrade(node.addr, "");
    let (mut zipped, ext) = upgrade(node.addr, &offer("permessage-deflate"));
    let (mut small_window, ext9) = upgrade(
        node.addr,
        &offer("permessage-deflate; server_max_window_bits=9"),
    );
    assert!(ext.is_some() && ext9.is_some());
    for s in [&mut plain, &mut zipped, &mut small_window] {
        subscribe(s, "c");
    }
    let (mut publisher, _) = upgrade(node.addr, "");
    let big = payload_json(16);
    assert!(big.len() > 1000, "{}", big.len());
    for data in [big.as_str(), "42", big.as_str()] {
        let cmd = format!(r#"{{"type":"publish","channel":"c","data":{data}}}"#);
        publisher.write_all(&frame(0x81, cmd.as_bytes())).unwrap();
    }
    let three = |g: &[Got]| g.len() >= 3;
    let p = read_frames(&mut plain, three);
    let z = read_frames(&mut zipped, three);
    let w = read_frames(&mut small_window, three);
    assert!(p.iter().all(|g| !g.rsv1));
    assert_eq!(
        z.iter().map(|g| g.rsv1).collect::<Vec<_>>(),
        [true, false, true],
        "big messages compressed, the small one not"
    );
    for i in 0..3 {
        assert_eq!(
            z[i].payload, p[i].payload,
            "message {i} inflates to the same bytes"
        );
        assert_eq!(w[i], p[i], "a 512-byte window gets these plain");
    }
    assert_eq!(p[0].json()["data"][3]["id"], 3);
    assert!(
        z[0].wire_len * 4 < p[0].wire_len,
        "{} vs {}",
        z[0].wire_len,
        p[0].wire_len
    );
}

#[test]
fn compressed_client_messages_are_inflated_whole_or_fragmented() {
    let node = TestNode::start(&["--compression", "on"]);
    let (mut sub, _) = upgrade(node.addr, "");
    subscribe(&mut sub, "c");
    let (mut client, ext) = upgrade(node.addr, &offer("permessage-deflate"));
    assert!(ext.is_some());
    let data = payload_json(8);
    let cmd = format!(r#"{{"type":"publish","channel":"c","data":{data}}}"#);
    let z = deflate(cmd.as_bytes());
    client.write_all(&frame(0xC1, &z)).unwrap();
    // Fragmented: RSV1 on the first frame only, a ping between the fragments.
    let (a, b) = z.split_at(z.len() / 2);
    let mut bytes = frame(0x41, a);
    bytes.extend(frame(0x89, b"p"));
    bytes.extend(frame(0x80, b));
    client.write_all(&bytes).unwrap();
    let got = read_frames(&mut sub, |g| g.len() >= 2);
    for g in &got {
        assert_eq!(
            g.json()["data"],
            serde_json::from_str::<serde_json::Value>(&data).unwrap()
        );
    }
    let pong = read_frames(&mut client, |g| !g.is_empty());
    assert_eq!(
        pong[0].op, 10,
        "the ping between fragments answered: {pong:?}"
    );
}

#[test]
fn a_zip_bomb_is_closed_1009_without_inflating_it() {
    let node = TestNode::start(&["--compression", "on", "--max-message", "65536"]);
    let (mut client, _) = upgrade(node.addr, &offer("permessage-deflate"));
    let zeros = vec![b' '; 16 << 20];
    let bomb = deflate(&zeros);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    client.write_all(&frame(0xC1, &bomb)).unwrap();
    let got = read_frames(&mut client, |g| g.iter().any(|f| f.op == 8));
    assert_eq!(got.last().unwrap().close_code(), 1009, "{got:?}");
}

#[test]
fn rsv1_where_it_is_not_allowed_is_closed_1002() {
    let on = TestNode::start(&["--compression", "on"]);
    let off = TestNode::start(&[]);
    let z = deflate(br#"{"type":"subscribe","channel":"c"}"#);
    let cases: Vec<(SocketAddr, String, Vec<u8>, &str)> = vec![
        (on.addr, String::new(), frame(0xC1, &z), "not negotiated"),
        (
            off.addr,
            offer("permessage-deflate"),
            frame(0xC1, &z),
            "compression off",
        ),
        (
            on.addr,
            offer("permessage-deflate"),
            frame(0xC9, b""),
            "ping",
        ),
        (
            on.addr,
            offer("permessage-deflate"),
            [frame(0x01, b"{"), frame(0xC0, b"}")].concat(),
            "continuation",
        ),
    ];
    for (addr, extra, bytes, what) in cases {
        let (mut s, _) = upgrade(addr, &extra);
        s.write_all(&bytes).unwrap();
        let got = read_frames(&mut s, |g| g.iter().any(|f| f.op == 8));
        assert_eq!(got.last().unwrap().close_code(), 1002, "{what}: {got:?}");
    }
}

#[test]
fn the_echo_path_echoes_compressed() {
    let node = TestNode::start(&["--compression", "on", "--echo-path", "/echo"]);
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains(ANSWER));
    let text = "hello hello hello ".repeat(40);
    s.write_all(&frame(0xC1, &deflate(text.as_bytes())))
        .unwrap();
    s.write_all(&frame(0x81, b"short")).unwrap();
    let got = read_frames(&mut s, |g| g.len() >= 2);
    assert!(got[0].rsv1 && got[0].payload == text.as_bytes(), "{got:?}");
    assert!(!got[1].rsv1);
    assert_eq!(got[1].payload, b"short");
}

/// Messages compressed (process-wide) while M messages go to `subs` deflate subscribers
/// of an in-process node with 2 shards.
fn compressions_for(subs: usize, msgs: usize) -> u64 {
    let args = fanout::config::Args {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(2),
        compression: Some(fanout::config::OnOff::On),
        ..Default::default()
    };
    let config = fanout::config::Config::resolve(args, None).unwrap();
    let server = fanout::server::start(config).unwrap();
    let mut clients: Vec<TcpStream> = (0..subs)
        .map(|_| upgrade(server.local_addr, &offer("permessage-deflate")).0)
        .collect();
    for c in clients.iter_mut() {
        subscribe(c, "hot");
    }
    let (mut publisher, _) = upgrade(server.local_addr, "");
    let data = payload_json(16);
    let before = fanout::ws::deflate::compressed_count();
    let cmd = format!(r#"{{"type":"publish","channel":"hot","data":{data}}}"#);
    for _ in 0..msgs {
        publisher.write_all(&frame(0x81, cmd.as_bytes())).unwrap();
    }
    for c in clients.iter_mut() {
        let got = read_frames(c, |g| g.len() >= msgs);
        assert!(got.iter().all(|g| g.rsv1), "every delivery compressed");
    }
    let used = fanout::ws::deflate::compressed_count() - before;
    let counted = support::metric(server.local_addr, "fanout_messages_compressed_total");
    assert_eq!(
        counted as u64, used,
        "the metric counts what was compressed"
    );
    server.shutdown();
    used
}

#[test]
fn each_message_is_compressed_once_per_shard_not_per_subscriber() {
    const MSGS: usize = 40;
    let few = compressions_for(10, MSGS);
    let many = compressions_for(200, MSGS);
    // Each message once per shard that has subscribers (2 shards): never per subscriber.
    for (subs, n) in [(10, few), (200, many)] {
        assert!(
            (MSGS as u64..=2 * MSGS as u64).contains(&n),
            "{n} compressions for {MSGS} messages to {subs} subscribers"
        );
    }
    assert_eq!(few, many, "20x the subscribers, the same compressions");
}
