//! What a client parses: the server's byte stream split into RFC 6455 frames, checked
//! as a strict client would check them (no reserved bits, no mask, whole frames only,
//! text frames valid JSON, nothing after a close frame), so tests assert on frames, never
//! on bytes found somewhere in the stream.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One frame as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(Value),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Splits `bytes` into frames; panics with the position on anything a strict client
/// would refuse. `bytes` must end on a frame boundary (the server closed the socket).
pub fn parse_stream(bytes: &[u8]) -> Vec<Frame> {
    let (frames, used) = parse_prefix(bytes);
    assert!(
        used == bytes.len(),
        "stream ends inside a frame at offset {used} ({} bytes left)",
        bytes.len() - used
    );
    frames
}

/// The whole frames at the start of `bytes` and the bytes they use (a stream still
/// being read may end inside a frame). Panics on anything a strict client refuses.
pub fn parse_prefix(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        if at + 2 > bytes.len() {
            break;
        }
        let ext = match bytes[at + 1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if at + 2 + ext > bytes.len() {
            break;
        }
        if let Some(Frame::Close(_)) = frames.last() {
            panic!(
                "{} bytes after a close frame (RFC 6455 §5.5.1) at offset {at}",
                bytes.len() - at
            );
        }
        let b0 = bytes[at];
        let b1 = bytes[at + 1];
        assert_eq!(b0 & 0x70, 0, "reserved bits set at offset {at}: {b0:#04x}");
        assert_eq!(b1 & 0x80, 0, "masked server frame at offset {at}");
        assert!(b0 & 0x80 != 0, "fragmented server frame at offset {at}");
        let (len, head) = match b1 & 0x7f {
            126 => (
                u16::from_be_bytes(bytes[at + 2..at + 4].try_into().unwrap()) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let start = at + head;
        let end = start + len;
        if end > bytes.len() {
            break;
        }
        let payload = &bytes[start..end];
        let frame = match b0 & 0x0f {
            1 => {
                let text = std::str::from_utf8(payload)
                    .unwrap_or_else(|_| panic!("text frame at {at} is not UTF-8"));
                Frame::Text(serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!("text frame at {at} is not JSON ({e}): {text:.200}")
                }))
            }
            2 => Frame::Binary(payload.to_vec()),
            8 => {
                if payload.is_empty() {
                    Frame::Close(None)
                } else {
                    assert!(payload.len() >= 2, "close payload of 1 byte at {at}");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8(payload[2..].to_vec())
                        .unwrap_or_else(|_| panic!("close reason at {at} is not UTF-8"));
                    Frame::Close(Some((code, reason)))
                }
            }
            9 => Frame::Ping(payload.to_vec()),
            10 => Frame::Pong(payload.to_vec()),
            op => panic!("unknown opcode {op} at offset {at}"),
        };
        frames.push(frame);
        at = end;
    }
    (frames, at)
}

/// Reads `s` until the frames received so far satisfy `done` (bounded by `deadline`);
/// returns every byte read.
pub fn read_until(
    s: &mut TcpStream,
    deadline: Duration,
    mut done: impl FnMut(&[Frame]) -> bool,
) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut frames, mut parsed) = (Vec::new(), 0);
    loop {
        let (more, used) = parse_prefix(&out[parsed..]);
        frames.extend(more);
        parsed += used;
        if done(&frames) {
            return out;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("server closed before the condition was met"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Reads until the server closes the socket; panics past `deadline` (a hang is a
/// failure). A reset after the last byte counts as the end.
pub fn read_to_eof(s: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < end,
                    "server did not close within {deadline:?} ({} bytes read)",
                    out.len()
                );
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// A masked client text frame.
pub fn text(s: &str) -> Vec<u8> {
    fanout::ws::inbound::client_frame(1, true, s.as_bytes(), [3, 1, 4, 1])
}

/// A masked client frame with opcode `op`.
pub fn control(op: u8, payload: &[u8]) -> Vec<u8> {
    fanout::ws::inbound::client_frame(op, true, payload, [2, 7, 1, 8])
}

pub fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write to server");
}

/// Parses one HTTP/1.1 response (head + Content-Length body) from the start of `bytes`;
/// returns (status, head, body, bytes used). Panics on a short or malformed response.
pub fn http_response(bytes: &[u8]) -> (u16, String, Vec<u8>, usize) {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 "),
        "not an HTTP response: {head:.200}"
    );
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("Content-Length");
    let body_at = head_end + 4;
    assert!(
        bytes.len() >= body_at + len,
        "body cut short: {} of {len} bytes",
        bytes.len() - body_at
    );
    (
        status,
        head,
        bytes[body_at..body_at + len].to_vec(),
        body_at + len,
    )
}
