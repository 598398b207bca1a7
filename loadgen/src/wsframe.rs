//! RFC 6455 frame codec for the client side: masked frame encoding and server frame
//! decoding (zero-copy: the decoder only reports where the payload lies in the buffer).

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest frame payload accepted from a server.
pub const MAX_FRAME: u64 = 64 << 20;

/// Header of one decoded frame; the payload is `buf[header_len..header_len+payload_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1: a compressed message (permessage-deflate); the caller checks it was agreed.
    pub rsv1: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub payload_len: usize,
    pub mask: Option<[u8; 4]>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decode {
    Frame(Frame),
    Incomplete,
    Error(&'static str),
}

/// XOR `buf` with the 4-byte `mask`, starting at mask offset 0 (8 bytes at a time).
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let m = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ m).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Append one complete (FIN) masked client frame to `out`.
pub fn encode_client(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Decode the frame header at the start of `buf`. Returns `Incomplete` until the whole
/// frame (header and payload) is in `buf`.
pub fn decode(buf: &[u8]) -> Decode {
    if buf.len() < 2 {
        return Decode::Incomplete;
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x30 != 0 {
        return Decode::Error("reserved bits set");
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    if !matches!(
        opcode,
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Decode::Error("unknown opcode");
    }
    let masked = b1 & 0x80 != 0;
    let mut pos = 2usize;
    let len = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Decode::Incomplete;
            }
            pos = 4;
            u16::from_be_bytes([buf[2], buf[3]]) as u64
        }
        127 => {
            if buf.len() < 10 {
                return Decode::Incomplete;
            }
            pos = 10;
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(w)
        }
        n => n as u64,
    };
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Decode::Error("bad control frame");
    }
    if len > MAX_FRAME {
        return Decode::Error("frame too large");
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Decode::Incomplete;
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    let len = len as usize;
    if buf.len() < pos + len {
        return Decode::Incomplete;
    }
    Decode::Frame(Frame {
        fin,
        rsv1: b0 & 0x40 != 0,
        opcode,
        header_len: pos,
        payload_len: len,
        mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | op];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else if payload.len() <= 0xFFFF {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn encode_is_masked_and_roundtrips() {
        for len in [0usize, 1, 7, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = Vec::new();
            let mask = [0x12, 0x34, 0x56, 0x78];
            encode_client(&mut out, OP_TEXT, &payload, mask);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0, "client frames must be masked");
            match decode(&out) {
                Decode::Frame(f) => {
                    assert!(f.fin);
                    assert_eq!(f.opcode, OP_TEXT);
                    assert_eq!(f.payload_len, len);
                    assert_eq!(f.mask, Some(mask));
                    assert_eq!(f.header_len + len, out.len());
                    let mut p = out[f.header_len..].to_vec();
                    apply_mask(&mut p, mask);
                    assert_eq!(p, payload);
                }
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn rfc_masked_hello_example() {
        // RFC 6455 §5.7: masked "Hello".
        let mut out = Vec::new();
        encode_client(&mut out, OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn decode_server_frames_and_partials() {
        let f = server_frame(OP_TEXT, true, b"Hello");
        assert_eq!(f, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut]), Decode::Incomplete, "cut {cut}");
        }
        let big = vec![b'a'; 70000];
        let fb = server_frame(OP_BINARY, false, &big);
        match decode(&fb) {
            Decode::Frame(fr) => {
                assert_eq!(fr.header_len, 10);
                assert_eq!(fr.payload_len, 70000);
                assert!(!fr.fin);
                assert_eq!(fr.mask, None);
            }
            other => panic!("{other:?}"),
        }
        let mid = server_frame(OP_TEXT, true, &big[..300]);
        match decode(&mid) {
            Decode::Frame(fr) => assert_eq!((fr.header_len, fr.payload_len), (4, 300)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(decode(&[0x83, 0x00]), Decode::Error(_)));
        assert!(matches!(decode(&[0xA1, 0x00]), Decode::Error(_)));
        // RSV1 decodes (the caller checks deflate was agreed)
        assert!(matches!(
            decode(&[0xC1, 0x00]),
            Decode::Frame(Frame { rsv1: true, .. })
        ));
        // fragmented ping
        assert!(matches!(decode(&[0x09, 0x00]), Decode::Error(_)));
        // ping with 126-byte payload
        assert!(matches!(decode(&[0x89, 126, 0, 126]), Decode::Error(_)));
    }
}
