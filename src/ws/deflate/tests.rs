use super::*;
use crate::ws::frame::{build, OutOp};

fn agreed(headers: &[&str]) -> Option<(u8, String)> {
    negotiate(headers.iter().copied()).map(|a| (a.bits, a.answer))
}

const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[test]
fn negotiation_answers_every_offer_form() {
    assert_eq!(agreed(&["permessage-deflate"]), Some((15, BOTH.into())));
    assert_eq!(
        agreed(&["permessage-deflate; client_max_window_bits"]),
        Some((15, BOTH.into()))
    );
    assert_eq!(
        agreed(&["permessage-deflate; client_max_window_bits=10"]),
        Some((15, BOTH.into()))
    );
    assert_eq!(
        agreed(&["Permessage-Deflate; Server_No_Context_Takeover; client_no_context_takeover"]),
        Some((15, BOTH.into()))
    );
    assert_eq!(
        agreed(&["permessage-deflate; server_max_window_bits=\"10\""]),
        Some((10, format!("{BOTH}; server_max_window_bits=10")))
    );
    assert_eq!(agreed(&["x-webkit-deflate-frame"]), None);
    assert_eq!(agreed(&[]), None);
}

#[test]
fn bad_offers_are_declined_and_the_next_one_taken() {
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; mystery",
    ] {
        assert_eq!(agreed(&[bad]), None, "{bad}");
        // The next offer, in the same header or the next one, is taken.
        let two = format!("{bad}, permessage-deflate; server_max_window_bits=9");
        assert_eq!(agreed(&[&two]).map(|a| a.0), Some(9), "{two}");
        assert_eq!(agreed(&[bad, "permessage-deflate"]).map(|a| a.0), Some(15));
    }
    // An unterminated quote swallows the rest of its header.
    assert_eq!(
        agreed(&["permessage-deflate; server_max_window_bits=\"10, permessage-deflate"]),
        None
    );
}

fn inflated(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    inflate(compressed, max, <[u8]>::to_vec)
}

/// The payload of the one server frame in `f`, with its first byte.
fn frame_payload(f: &[u8]) -> (u8, Vec<u8>) {
    let mut g = f.to_vec();
    g[0] &= !0x40;
    let (_, p) = split_frame(&g).unwrap();
    (f[0], p.to_vec())
}

#[test]
fn frames_compress_once_and_inflate_to_the_same_bytes() {
    let json = format!(
        "{{\"channel\":\"c\",\"data\":{}}}",
        "[1,2,3,4,5],".repeat(100)
    );
    let small = build(OutOp::Text, b"{\"type\":\"gap\"}").freeze();
    let big = build(OutOp::Text, json.as_bytes()).freeze();
    let z = compress_frames(&[small.clone(), big.clone()]);
    let joined = z.frame;
    assert_eq!((z.longest, z.messages), (json.len(), 1));
    assert_eq!(
        &joined[..small.len()],
        &small[..],
        "small frames stay plain"
    );
    let (b0, payload) = frame_payload(&joined[small.len()..]);
    assert_eq!(b0, 0xC1, "FIN + RSV1 + text");
    assert!(payload.len() < json.len() / 4);
    assert!(!payload.ends_with(&TAIL));
    assert_eq!(inflated(&payload, 1 << 20).unwrap(), json.as_bytes());
    // The same message compresses to the same bytes (no context carried over).
    assert_eq!(
        compress_frames(std::slice::from_ref(&big)).frame,
        joined.slice(small.len()..)
    );
    // Pongs and messages longer than a small window stay plain.
    let pong = build(OutOp::Pong, &[b'x'; 200]).freeze();
    assert_eq!(compress_for(&pong, 15), pong);
    assert_eq!(compress_for(&big, 9), big);
    assert_eq!(compress_for(&big, 15)[0], 0xC1);
    // A full window takes messages of any length (the compressor's window is 32 KiB).
    let huge = build(OutOp::Text, json.repeat(100).as_bytes()).freeze();
    assert!(huge.len() > 65536);
    assert_eq!(compress_for(&huge, 15)[0], 0xC1);
}

#[test]
fn inflation_is_bounded_and_rejects_garbage() {
    let zeros = vec![0u8; 1 << 20];
    let mut d = Deflater::new();
    assert!(d.compress(&zeros));
    let bomb = d.out.clone();
    assert!(bomb.len() < 2048, "{}", bomb.len());
    assert_eq!(inflated(&bomb, 1 << 16), Err(InflateError::TooLarge));
    assert_eq!(inflated(&bomb, 1 << 20).unwrap().len(), 1 << 20);
    assert_eq!(
        inflated(&[0xff, 0xff, 0xff], 1024),
        Err(InflateError::Corrupt)
    );
    assert_eq!(inflated(&[], 1024).unwrap(), b"");
    // The RFC 7692 §7.2.3.1 sample: "Hello".
    assert_eq!(
        inflated(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024).unwrap(),
        b"Hello"
    );
    // Uncompressed (stored) blocks, as §7.2.3.3 shows.
    assert_eq!(
        inflated(
            &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00],
            1024
        )
        .unwrap(),
        b"Hello"
    );
}
