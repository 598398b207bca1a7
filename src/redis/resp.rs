//! RESP2, the Redis wire format: a decoder that takes whole values off the front of a
//! `BytesMut` (bulk strings become zero-copy `Bytes` slices of the read buffer), and the
//! command encoder. "Incomplete" is an expected answer, not an error. Depth, element
//! counts and lengths are bounded, so hostile input cannot make it allocate or recurse
//! without limit.

use bytes::{Buf, Bytes, BytesMut};

/// Longest bulk string accepted (Redis's own proto-max-bulk-len default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Most elements in one array.
pub const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of arrays.
pub const MAX_DEPTH: usize = 8;
/// Longest line (type byte to CRLF) accepted: a simple string, an error, an integer or
/// the length line of a bulk string or array. Bulk payloads are bounded by `MAX_BULK`.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError(pub &'static str);

/// Takes one complete value off the front of `buf`, or returns `Ok(None)` (consuming
/// nothing) when more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Value>, RespError> {
    let len = match check(buf, 0, 0)? {
        Some(end) => end,
        None => return Ok(None),
    };
    let mut frame = buf.split_to(len).freeze();
    parse(&mut frame).map(Some)
}

/// Finds the end of the value starting at `pos` without building it.
fn check(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError("nesting too deep"));
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    // Every line is capped, whatever its type (a `$` length line included): the search
    // never looks further than the cap, so a stream without CRLF costs bounded work.
    let window = &buf[..buf.len().min(pos + 1 + MAX_LINE + 1)];
    let Some(line_end) = find_crlf(window, pos + 1) else {
        if buf.len() - pos > MAX_LINE {
            return Err(RespError("line too long"));
        }
        return Ok(None);
    };
    let line = &buf[pos + 1..line_end];
    let next = line_end + 2;
    match tag {
        b'+' | b'-' => Ok(Some(next)),
        b':' => {
            parse_int(line)?;
            Ok(Some(next))
        }
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(RespError("bulk string too long"));
            }
            let end = next + n + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(RespError("bulk string not terminated"));
            }
            Ok(Some(end))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some(next));
            }
            if n as usize > MAX_ARRAY {
                return Err(RespError("array too long"));
            }
            let mut at = next;
            for _ in 0..n {
                match check(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        _ => Err(RespError("unknown type byte")),
    }
}

/// Builds the value from a buffer `check` has vetted.
fn parse(buf: &mut Bytes) -> Result<Value, RespError> {
    if buf.is_empty() {
        return Err(RespError("truncated"));
    }
    let tag = buf[0];
    buf.advance(1);
    let line_end = find_crlf(buf, 0).ok_or(RespError("truncated"))?;
    let line = buf.split_to(line_end);
    buf.advance(2);
    match tag {
        b'+' => Ok(Value::Simple(line)),
        b'-' => Ok(Value::Error(line)),
        b':' => Ok(Value::Int(parse_int(&line)?)),
        b'$' => {
            let n = parse_int(&line)?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let n = n as usize;
            if buf.len() < n + 2 {
                return Err(RespError("truncated"));
            }
            let data = buf.split_to(n);
            buf.advance(2);
            Ok(Value::Bulk(data))
        }
        b'*' => {
            let n = parse_int(&line)?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut items = Vec::with_capacity((n as usize).min(64));
            for _ in 0..n {
                items.push(parse(buf)?);
            }
            Ok(Value::Array(items))
        }
        _ => Err(RespError("unknown type byte")),
    }
}

/// A pub/sub `message` push, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// `*3 $7 message $N channel $M payload`: the channel, the payload and the bytes
    /// the whole push takes.
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
        len: usize,
    },
    /// More bytes are needed for the message that starts here.
    Incomplete,
    /// Something else starts here (a confirmation, an error…): use `decode`.
    Other,
}

/// The reader's fast path: recognises a `message` push at the start of `buf` without
/// allocating or touching reference counts. Anything unusual is `Other`, for `decode`.
pub fn peek_message(buf: &[u8]) -> Push<'_> {
    peek_push(buf, b"*3\r\n$7\r\nmessage\r\n")
}

/// `peek_message` for the `smessage` pushes of sharded pub/sub (Redis Cluster).
pub fn peek_smessage(buf: &[u8]) -> Push<'_> {
    peek_push(buf, b"*3\r\n$8\r\nsmessage\r\n")
}

#[inline(always)]
fn peek_push<'a>(buf: &'a [u8], head: &'static [u8]) -> Push<'a> {
    if buf.len() < head.len() {
        return if head.starts_with(buf) {
            Push::Incomplete
        } else {
            Push::Other
        };
    }
    if &buf[..head.len()] != head {
        return Push::Other;
    }
    let mut at = head.len();
    let bulk = |at: &mut usize| -> Option<Option<&[u8]>> {
        // Some(None): incomplete; None: not a plain bulk string.
        if buf.len() <= *at {
            return Some(None);
        }
        if buf[*at] != b'$' {
            return None;
        }
        let Some(end) = find_crlf(buf, *at + 1) else {
            return if buf.len() - *at > 24 {
                None
            } else {
                Some(None)
            };
        };
        let n = parse_int(&buf[*at + 1..end]).ok()?;
        if n < 0 || n as usize > MAX_BULK {
            return None;
        }
        let start = end + 2;
        let stop = start + n as usize;
        if buf.len() < stop + 2 {
            return Some(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return None;
        }
        *at = stop + 2;
        Some(Some(&buf[start..stop]))
    };
    let channel = match bulk(&mut at) {
        None => return Push::Other,
        Some(None) => return Push::Incomplete,
        Some(Some(c)) => c,
    };
    let payload = match bulk(&mut at) {
        None => return Push::Other,
        Some(None) => return Push::Incomplete,
        Some(Some(p)) => p,
    };
    Push::Message {
        channel,
        payload,
        len: at,
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    if from >= buf.len() {
        return None;
    }
    buf[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn parse_int(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(RespError("bad integer"))
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    use bytes::BufMut;
    out.put_u8(b'*');
    put_decimal(out, args.len());
    for arg in args {
        out.put_u8(b'$');
        put_decimal(out, arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

fn put_decimal(out: &mut BytesMut, n: usize) {
    use bytes::BufMut;
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<Vec<Value>, RespError> {
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(v) = decode(&mut buf)? {
            out.push(v);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    #[test]
    fn decodes_pubsub_message_and_replies() {
        let got = all(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\n{\"a\":1}\r\n:5\r\n+OK\r\n-ERR no\r\n$-1\r\n").unwrap();
        assert_eq!(
            got[0],
            Value::Array(vec![
                Value::Bulk(Bytes::from_static(b"message")),
                Value::Bulk(Bytes::from_static(b"news")),
                Value::Bulk(Bytes::from_static(b"{\"a\":1}")),
            ])
        );
        assert_eq!(got[1], Value::Int(5));
        assert_eq!(got[2], Value::Simple(Bytes::from_static(b"OK")));
        assert_eq!(got[3], Value::Error(Bytes::from_static(b"ERR no")));
        assert_eq!(got[4], Value::Nil);
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhe\r\nl\r\n";
        for cut in 0..msg.len() {
            let mut buf = BytesMut::from(&msg[..cut]);
            assert_eq!(decode(&mut buf), Ok(None), "cut {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&msg[..]);
        assert!(matches!(decode(&mut buf), Ok(Some(Value::Array(_)))));
    }

    #[test]
    fn hostile_input_is_refused() {
        for bad in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$5\r\nhelloXX",
            b"$99999999999\r\n",
            b"*9999999999\r\n",
        ] {
            assert!(decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(20);
        assert!(decode(&mut BytesMut::from(deep.as_bytes())).is_err());
    }

    #[test]
    fn peek_message_agrees_with_decode_and_defers_the_rest() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$7\r\n{\"a\":1}\r\n";
        assert_eq!(
            peek_message(msg),
            Push::Message {
                channel: b"news",
                payload: b"{\"a\":1}",
                len: msg.len()
            }
        );
        for cut in 0..msg.len() {
            assert_eq!(peek_message(&msg[..cut]), Push::Incomplete, "cut {cut}");
        }
        assert_eq!(
            peek_message(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            Push::Other
        );
        assert_eq!(peek_message(b"-ERR x\r\n"), Push::Other);
        let smsg = b"*3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n";
        assert_eq!(peek_message(smsg), Push::Other);
        assert_eq!(
            peek_smessage(smsg),
            Push::Message {
                channel: b"c",
                payload: b"hi",
                len: smsg.len()
            }
        );
        assert_eq!(peek_message(b"*3\r\n$7\r\nmessage\r\n$-1\r\n"), Push::Other);
        assert_eq!(
            peek_message(b"*3\r\n$7\r\nmessage\r\n$1\r\ncXX"),
            Push::Other
        );
    }

    #[test]
    fn every_line_is_capped_bulk_length_lines_included() {
        for tag in [b'$', b'*', b':', b'+', b'-'] {
            let mut long = vec![tag];
            long.extend(std::iter::repeat_n(b'0', MAX_LINE + 1));
            assert_eq!(
                decode(&mut BytesMut::from(&long[..])),
                Err(RespError("line too long")),
                "tag {}",
                tag as char
            );
            // Terminated but too long is refused too (leading zeros parse as a number).
            long.extend_from_slice(b"1\r\nx\r\n");
            assert!(
                decode(&mut BytesMut::from(&long[..])).is_err(),
                "tag {}",
                tag as char
            );
        }
        // A line at the cap is still only incomplete.
        let mut ok = vec![b'$'];
        ok.extend(std::iter::repeat_n(b'0', MAX_LINE - 1));
        assert_eq!(decode(&mut BytesMut::from(&ok[..])), Ok(None));
    }

    proptest::proptest! {
        #[test]
        fn no_line_outgrows_the_cap(tag in proptest::sample::select(vec![b'$', b'*', b':', b'+', b'-']),
                                    len in (MAX_LINE + 1)..(3 * MAX_LINE),
                                    fill in proptest::sample::select(vec![b'0', b'7', b'a', b'\r', b'\n'])) {
            // `len` bytes with no CRLF in them after the type byte: refused, never
            // buffered without bound.
            let mut buf = vec![tag];
            buf.extend(std::iter::repeat_n(fill, len));
            proptest::prop_assert!(decode(&mut BytesMut::from(&buf[..])).is_err());
        }
    }

    #[test]
    fn encode_round_trips() {
        let mut out = BytesMut::new();
        encode(&mut out, &[b"PUBLISH", b"news", b"{\"a\":1}"]);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$7\r\n{\"a\":1}\r\n"
        );
        let mut empty = BytesMut::new();
        encode(&mut empty, &[b""]);
        assert_eq!(&empty[..], b"*1\r\n$0\r\n\r\n");
    }
}
