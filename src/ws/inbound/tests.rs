use super::*;

const MASK: [u8; 4] = [1, 2, 3, 4];

#[derive(Debug, PartialEq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
    TooLarge,
}

fn run(inb: &mut Inbound, bytes: &[u8], max: usize) -> (Result<usize, Fail>, Vec<Got>) {
    let mut buf = bytes.to_vec();
    let mut got = Vec::new();
    let r = inb.feed(&mut buf, max, &mut |m| {
        got.push(match m {
            Message::Text(s) => Got::Text(s.to_string()),
            Message::Binary(b) => Got::Binary(b.to_vec()),
            Message::Ping(b) => Got::Ping(b.to_vec()),
            Message::Pong => Got::Pong,
            Message::Close(c) => Got::Close(c.map(|(c, r)| (c, r.to_string()))),
            Message::TooLarge => Got::TooLarge,
        });
        Flow::Continue
    });
    (r, got)
}

#[test]
fn unmask_matches_bytewise_xor() {
    let mut data: Vec<u8> = (0..37).collect();
    let expect: Vec<u8> = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[i % 4])
        .collect();
    unmask(&mut data, MASK);
    assert_eq!(data, expect);
}

#[test]
fn decodes_several_frames_and_keeps_the_incomplete_tail() {
    let mut bytes = client_frame(1, true, b"hello", MASK);
    bytes.extend(client_frame(9, true, b"p", MASK));
    let third = client_frame(2, true, &[7; 300], MASK);
    bytes.extend(&third[..10]);
    let mut inb = Inbound::default();
    let (r, got) = run(&mut inb, &bytes, 1024);
    assert_eq!(
        got,
        vec![Got::Text("hello".into()), Got::Ping(b"p".to_vec())]
    );
    assert_eq!(r, Ok(bytes.len() - 10));
    let (r, got) = run(&mut inb, &third, 1024);
    assert_eq!(r, Ok(third.len()));
    assert_eq!(got, vec![Got::Binary(vec![7; 300])]);
}

#[test]
fn reassembles_fragments_with_interleaved_control_frames() {
    let mut bytes = client_frame(1, false, "héll".as_bytes(), MASK);
    bytes.extend(client_frame(9, true, b"", MASK));
    bytes.extend(client_frame(0, true, "o".as_bytes(), MASK));
    let mut inb = Inbound::default();
    let (r, got) = run(&mut inb, &bytes, 1024);
    assert_eq!(r, Ok(bytes.len()));
    assert_eq!(got, vec![Got::Ping(vec![]), Got::Text("héllo".into())]);
    assert!(inb.is_idle());
}

#[test]
fn utf8_split_across_fragments_is_accepted_and_invalid_fails_fast() {
    let e = "é".as_bytes();
    let mut bytes = client_frame(1, false, &e[..1], MASK);
    bytes.extend(client_frame(0, true, &e[1..], MASK));
    let (r, got) = run(&mut Inbound::default(), &bytes, 1024);
    assert_eq!(r, Ok(bytes.len()));
    assert_eq!(got, vec![Got::Text("é".into())]);
    let bad = client_frame(1, false, &[0xff, b'a'], MASK);
    let (r, _) = run(&mut Inbound::default(), &bad, 1024);
    assert_eq!(r.map_err(|f| f.code), Err(1007));
}

#[test]
fn oversized_frame_is_skipped_across_reads_without_closing() {
    let big = client_frame(1, true, &[b'a'; 5000], MASK);
    let mut inb = Inbound::default();
    let (r, got) = run(&mut inb, &big[..1000], 1000);
    assert_eq!(r, Ok(1000));
    assert_eq!(got, vec![Got::TooLarge]);
    let mut rest = big[1000..].to_vec();
    rest.extend(client_frame(1, true, b"ok", MASK));
    let (r, got) = run(&mut inb, &rest, 1000);
    assert_eq!(r, Ok(rest.len()));
    assert_eq!(got, vec![Got::Text("ok".into())]);
}

#[test]
fn oversized_fragmented_message_reports_once_at_its_end() {
    let mut bytes = client_frame(1, false, &[b'a'; 60], MASK);
    bytes.extend(client_frame(0, false, &[b'a'; 60], MASK));
    bytes.extend(client_frame(0, true, &[b'a'; 60], MASK));
    bytes.extend(client_frame(1, true, b"x", MASK));
    let (r, got) = run(&mut Inbound::default(), &bytes, 100);
    assert_eq!(r, Ok(bytes.len()));
    assert_eq!(got, vec![Got::TooLarge, Got::Text("x".into())]);
}

#[test]
fn protocol_violations_fail_with_the_right_code() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (vec![0x81, 0x02, b'h', b'i'], 1002),               // unmasked
        (client_frame(0x3, true, b"", MASK), 1002),         // reserved opcode
        (client_frame(0, true, b"x", MASK), 1002),          // stray continuation
        (client_frame(9, false, b"", MASK), 1002),          // fragmented ping
        (client_frame(9, true, &[0; 126], MASK), 1002),     // long ping
        (client_frame(8, true, &[3], MASK), 1002),          // 1-byte close
        (client_frame(8, true, &[0x03, 0xEC], MASK), 1002), // close 1004
        (client_frame(8, true, &[0x03, 0xE8, 0xff], MASK), 1007), // bad reason
        (client_frame(1, true, &[0xc3, 0x28], MASK), 1007), // bad utf-8
        (
            {
                let mut f = client_frame(1, true, b"", MASK);
                f[0] |= 0x40;
                f
            },
            1002,
        ),
    ];
    for (i, (bytes, code)) in cases.into_iter().enumerate() {
        let (r, _) = run(&mut Inbound::default(), &bytes, 1024);
        assert_eq!(r.map_err(|f| f.code), Err(code), "case {i}");
    }
}

#[test]
fn close_frame_stops_decoding() {
    let mut bytes = client_frame(8, true, &[0x03, 0xE8, b'b', b'y', b'e'], MASK);
    bytes.extend(client_frame(1, true, b"after", MASK));
    let (r, got) = run(&mut Inbound::default(), &bytes, 1024);
    assert_eq!(got, vec![Got::Close(Some((1000, "bye".into())))]);
    assert!(r.unwrap() < bytes.len());
}

/// A compressed (RSV1) client frame of `data` deflated as a client would.
fn deflated_frame(opcode: u8, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut z = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut z, flate2::FlushCompress::Sync)
        .unwrap();
    z.truncate(z.len() - 4);
    let mut f = client_frame(opcode, fin, &z, MASK);
    f[0] |= 0x40;
    f
}

fn run_deflate(bytes: &[u8], max: usize) -> (Result<usize, Fail>, Vec<Got>) {
    let mut buf = bytes.to_vec();
    let mut got = Vec::new();
    let r = Inbound::default().feed_ext(&mut buf, max, true, &mut |m| {
        got.push(match m {
            Message::Text(s) => Got::Text(s.to_string()),
            Message::Binary(b) => Got::Binary(b.to_vec()),
            _ => Got::Pong,
        });
        Flow::Continue
    });
    (r, got)
}

#[test]
fn compressed_messages_inflate_and_are_bounded() {
    let text = "héllo ".repeat(50);
    let whole = deflated_frame(1, true, text.as_bytes());
    let (r, got) = run_deflate(&whole, 1024);
    assert_eq!((r, got), (Ok(whole.len()), vec![Got::Text(text.clone())]));
    // Over the limit once inflated: 1009, whatever the compressed size.
    let (r, _) = run_deflate(&whole, 100);
    assert_eq!(r.map_err(|f| f.code), Err(1009));
    // Not negotiated: RSV1 is a protocol error.
    let (r, _) = run(&mut Inbound::default(), &whole, 1024);
    assert_eq!(r.map_err(|f| f.code), Err(1002));
    // RSV1 on a control frame, on a continuation: 1002.
    let mut ping = client_frame(9, true, b"", MASK);
    ping[0] |= 0x40;
    assert_eq!(run_deflate(&ping, 1024).0.map_err(|f| f.code), Err(1002));
    let mut cont = client_frame(1, false, b"a", MASK);
    cont.extend(deflated_frame(0, true, b"b"));
    assert_eq!(run_deflate(&cont, 1024).0.map_err(|f| f.code), Err(1002));
    // Garbage: 1007.
    let mut bad = client_frame(1, true, &[0xff; 8], MASK);
    bad[0] |= 0x40;
    assert_eq!(run_deflate(&bad, 1024).0.map_err(|f| f.code), Err(1007));
}
