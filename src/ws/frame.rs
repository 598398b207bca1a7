//! Outgoing WebSocket frames, built once into one contiguous buffer so that a single
//! `Bytes` can be shared by every subscriber that receives it. Headers are formatted by
//! tungstenite's `FrameHeader`; no I/O happens here.

use bytes::{BufMut, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Opcode of a frame the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutOp {
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OutOp {
    fn opcode(self) -> OpCode {
        match self {
            OutOp::Text => OpCode::Data(Data::Text),
            OutOp::Binary => OpCode::Data(Data::Binary),
            OutOp::Close => OpCode::Control(Control::Close),
            OutOp::Ping => OpCode::Control(Control::Ping),
            OutOp::Pong => OpCode::Control(Control::Pong),
        }
    }
}

/// Length of an unmasked server frame header for a payload of `payload_len` bytes.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends the header of a final, unmasked frame carrying `payload_len` bytes.
pub fn put_header(buf: &mut BytesMut, op: OutOp, payload_len: usize) {
    let header = FrameHeader {
        opcode: op.opcode(),
        ..FrameHeader::default()
    };
    let mut writer = buf.writer();
    // Writing into a BytesMut cannot fail: it grows as needed.
    let _ = header.format(payload_len as u64, &mut writer);
}

/// A complete frame with `payload` as its body, in a buffer of exactly the right size.
pub fn build(op: OutOp, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut buf, op, payload.len());
    buf.put_slice(payload);
    buf
}

/// A close frame with a status code and a reason (truncated to fit a control frame).
pub fn close(code: u16, reason: &str) -> BytesMut {
    let mut body = Vec::with_capacity(2 + reason.len());
    body.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    body.extend_from_slice(&reason.as_bytes()[..end]);
    build(OutOp::Close, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_match_rfc_boundaries() {
        for (len, expect) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![b'a'; len];
            let frame = build(OutOp::Text, &payload);
            assert_eq!(frame.len(), expect + len, "len {len}");
            assert_eq!(header_len(len), expect);
            assert_eq!(frame[0], 0x81);
        }
    }

    #[test]
    fn small_text_frame_bytes() {
        assert_eq!(&build(OutOp::Text, b"hi")[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(&build(OutOp::Pong, b"")[..], &[0x8A, 0]);
    }

    #[test]
    fn close_frame_carries_code_and_truncated_reason() {
        let f = close(4000, "slow consumer");
        assert_eq!(&f[..4], &[0x88, 15, 0x0F, 0xA0]);
        let long = "é".repeat(100);
        let f = close(1000, &long);
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
