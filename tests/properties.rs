//! Property tests of the pure cores (run in the normal suite): parsers never panic on
//! arbitrary input, and encode → decode round-trips however the bytes are split.

use bytes::BytesMut;
use fanout::protocol::envelope::EnvelopeBuilder;
use fanout::redis::resp::{self, Value};
use fanout::ws::inbound::{client_frame, Flow, Inbound, Message};
use proptest::prelude::*;

/// Feeds `bytes` to a decoder in pieces cut at `cuts`, collecting text messages.
fn decode_in_pieces(bytes: &[u8], cuts: &[usize], max: usize) -> Result<Vec<String>, u16> {
    let mut inbound = Inbound::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut from = 0;
    for to in points {
        pending.extend_from_slice(&bytes[from..to]);
        from = to;
        let used = inbound
            .feed(&mut pending, max, &mut |m| {
                match m {
                    Message::Text(t) => got.push(t.to_string()),
                    Message::TooLarge => got.push("<too large>".into()),
                    _ => {}
                }
                Flow::Continue
            })
            .map_err(|f| f.code)?;
        pending.drain(..used);
    }
    Ok(got)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deflate_decoder_and_negotiation_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        header in "[a-z_=;, \"0-9]{0,80}",
    ) {
        let _ = fanout::ws::deflate::negotiate([header.as_str()]);
        // Random frames with RSV1 forced on the first one, on a deflate connection.
        let mut bytes = data.clone();
        if let Some(b) = bytes.first_mut() {
            *b |= 0x40;
        }
        let len = bytes.len();
        let used = Inbound::default().feed_ext(&mut bytes, 512, true, &mut |m| {
            if let Message::Text(t) = m {
                assert!(t.len() <= 512);
            }
            Flow::Continue
        });
        if let Ok(used) = used {
            prop_assert!(used <= len);
        }
        // Random compressed payloads, masked, as one whole message.
        let frame = {
            let mut f = client_frame(1, true, &data, [1, 2, 3, 4]);
            f[0] |= 0x40;
            f
        };
        let mut buf = frame.clone();
        let _ = Inbound::default().feed_ext(&mut buf, 512, true, &mut |_| Flow::Continue);
    }

    #[test]
    fn frame_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let _ = decode_in_pieces(&data, &cuts, 512);
    }

    #[test]
    fn fragmented_messages_round_trip_under_any_split(
        msgs in proptest::collection::vec(("[a-zé€😀 ]{0,300}", 1usize..4), 1..6),
        mask in any::<[u8; 4]>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut bytes = Vec::new();
        for (text, pieces) in &msgs {
            let raw = text.as_bytes();
            let step = raw.len().div_ceil(*pieces).max(1);
            let chunks: Vec<&[u8]> = if raw.is_empty() { vec![raw] } else { raw.chunks(step).collect() };
            for (i, chunk) in chunks.iter().enumerate() {
                let opcode = if i == 0 { 1 } else { 0 };
                bytes.extend(client_frame(opcode, i + 1 == chunks.len(), chunk, mask));
                if i == 0 && chunks.len() > 1 {
                    bytes.extend(client_frame(9, true, b"interleaved ping", mask));
                }
            }
        }
        let got = decode_in_pieces(&bytes, &cuts, 64 * 1024).expect("valid frames");
        let want: Vec<String> = msgs.iter().map(|(t, _)| t.clone()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn resp_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(_)) = resp::decode(&mut buf) {}
    }

    #[test]
    fn resp_round_trips_under_any_split(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5), cut in any::<usize>()) {
        let mut wire = BytesMut::new();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        resp::encode(&mut wire, &refs);
        let cut = cut % (wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        if cut < wire.len() {
            prop_assert_eq!(resp::decode(&mut buf), Ok(None));
        }
        buf.extend_from_slice(&wire[cut..]);
        let v = resp::decode(&mut buf).unwrap().unwrap();
        let want = Value::Array(args.iter().map(|a| Value::Bulk(bytes::Bytes::copy_from_slice(a))).collect());
        prop_assert_eq!(v, want);
    }

    #[test]
    fn peek_message_agrees_with_decode(channel in proptest::collection::vec(any::<u8>(), 0..64), payload in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<usize>(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut wire = BytesMut::new();
        resp::encode(&mut wire, &[b"message", &channel, &payload]);
        match resp::peek_message(&wire) {
            resp::Push::Message { channel: c, payload: p, len } => {
                prop_assert_eq!(c, &channel[..]);
                prop_assert_eq!(p, &payload[..]);
                prop_assert_eq!(len, wire.len());
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let cut = cut % wire.len();
        prop_assert_eq!(resp::peek_message(&wire[..cut]), resp::Push::Incomplete);
        let _ = resp::peek_message(&junk);
    }

    #[test]
    fn command_parser_never_panics(text in "\\PC{0,200}") {
        let _ = fanout::protocol::parse_command(&text, 256);
    }

    #[test]
    fn command_parser_never_panics_on_jsonish_text(text in r#"[{}\[\]":,a-z0-9 \\]{0,120}"#) {
        let _ = fanout::protocol::parse_command(&text, 256);
    }

    #[test]
    fn handshake_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = fanout::ws::handshake::parse(&data, 512);
    }

    #[test]
    fn envelope_is_valid_json_with_payload_preserved(channel in "\\PC{1,40}", payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = EnvelopeBuilder::default();
        let frame = b.build_checked(&channel, &payload);
        let header = if frame[1] & 0x7f == 126 { 4 } else { 2 };
        let body = &frame[header..];
        let v: serde_json::Value = serde_json::from_slice(body).expect("envelope is JSON");
        prop_assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
        if fanout::protocol::json::is_valid(&payload) {
            // Verbatim: the payload bytes appear unchanged inside the envelope.
            prop_assert!(body.windows(payload.len().max(1)).any(|w| w == &payload[..]) || payload.is_empty());
        } else {
            let s = String::from_utf8_lossy(&payload);
            prop_assert_eq!(v["data"].as_str(), Some(s.as_ref()));
        }
    }
}
