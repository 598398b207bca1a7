//! Tiny RESP client for publishing straight into Redis: command encoding, a reply
//! skipper that finds the end of one reply (of any type, nested) in a buffer, and the
//! non-blocking pipelined connection that counts PUBLISH replies.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// Append one RESP array command (e.g. `PUBLISH channel payload`) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_num(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_num(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Append the decimal digits of `v`.
pub fn push_num(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Kind of a top-level reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Int(i64),
    Simple,
    Error,
    Bulk,
    Null,
    Aggregate,
}

fn line(buf: &[u8], from: usize) -> Option<(usize, &[u8])> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((from + rel + 2, &buf[from..from + rel]))
}

fn int(s: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| format!("bad RESP integer {:?}", String::from_utf8_lossy(s)))
}

/// Parse one complete reply at `buf[from..]`: Ok(Some((end, kind))) when complete,
/// Ok(None) when more bytes are needed, Err on a protocol violation.
fn reply_at(buf: &[u8], from: usize, depth: u32) -> Result<Option<(usize, Reply)>, String> {
    if depth > 32 {
        return Err("RESP nesting too deep".into());
    }
    let Some(&tag) = buf.get(from) else {
        return Ok(None);
    };
    let Some((after, body)) = line(buf, from + 1) else {
        return Ok(None);
    };
    match tag {
        b'+' | b',' | b'#' | b'(' => Ok(Some((after, Reply::Simple))),
        b'-' => Ok(Some((after, Reply::Error))),
        b'_' => Ok(Some((after, Reply::Null))),
        b':' => Ok(Some((after, Reply::Int(int(body)?)))),
        b'$' | b'=' | b'!' => {
            let n = int(body)?;
            if n < 0 {
                return Ok(Some((after, Reply::Null)));
            }
            let end = after + n as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some((
                end,
                if tag == b'!' {
                    Reply::Error
                } else {
                    Reply::Bulk
                },
            )))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int(body)?;
            if n < 0 {
                return Ok(Some((after, Reply::Null)));
            }
            let items = if matches!(tag, b'%' | b'|') { n * 2 } else { n };
            let mut pos = after;
            for _ in 0..items {
                match reply_at(buf, pos, depth + 1)? {
                    None => return Ok(None),
                    Some((e, _)) => pos = e,
                }
            }
            Ok(Some((pos, Reply::Aggregate)))
        }
        other => Err(format!("unexpected RESP type byte {other:#x}")),
    }
}

/// Parse one reply at the start of `buf`.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(usize, Reply)>, String> {
    reply_at(buf, 0, 0)
}

/// One pipelined Redis connection used for PUBLISH.
pub struct RedisConn {
    pub sock: TcpStream,
    pub connected: bool,
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    pub rbuf: Vec<u8>,
    pub skip: u32,
}

/// Write as much of `wbuf[wpos..]` as the socket takes.
pub fn flush_raw(sock: &mut TcpStream, wbuf: &mut Vec<u8>, wpos: &mut usize) -> io::Result<()> {
    while *wpos < wbuf.len() {
        match sock.write(&wbuf[*wpos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if *wpos == wbuf.len() {
        wbuf.clear();
        *wpos = 0;
    }
    Ok(())
}

impl RedisConn {
    /// `wbuf` may hold commands (AUTH) whose `skip` replies are not publishes.
    pub fn new(sock: TcpStream, wbuf: Vec<u8>, skip: u32) -> RedisConn {
        RedisConn {
            sock,
            connected: false,
            wbuf,
            wpos: 0,
            rbuf: Vec::new(),
            skip,
        }
    }

    pub fn on_writable(&mut self) -> io::Result<()> {
        if !self.connected {
            if !crate::net::connected(&self.sock)? {
                return Ok(());
            }
            self.connected = true;
        }
        flush_raw(&mut self.sock, &mut self.wbuf, &mut self.wpos)
    }

    /// Read and count replies: returns (publish replies, publish errors, replies with 0
    /// receivers, still open) or an error.
    pub fn on_readable(&mut self) -> io::Result<(u64, u64, u64, bool)> {
        let mut buf = [0u8; 65536];
        let mut open = true;
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (mut replies, mut errors, mut zero, mut pos) = (0, 0, 0, 0);
        loop {
            match parse_reply(&self.rbuf[pos..]) {
                Ok(Some((used, kind))) => {
                    pos += used;
                    if self.skip > 0 {
                        self.skip -= 1;
                        if kind == Reply::Error {
                            return Err(io::Error::other("redis AUTH failed"));
                        }
                        continue;
                    }
                    replies += 1;
                    match kind {
                        Reply::Error => errors += 1,
                        Reply::Int(0) => zero += 1,
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        self.rbuf.drain(..pos);
        Ok((replies, errors, zero, open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_publish() {
        let mut v = Vec::new();
        encode_command(&mut v, &[b"PUBLISH", b"lg.0", b"{\"p\":1}"]);
        assert_eq!(
            v,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nlg.0\r\n$7\r\n{\"p\":1}\r\n".to_vec()
        );
        let mut v = Vec::new();
        encode_command(&mut v, &[b"PING"]);
        assert_eq!(v, b"*1\r\n$4\r\nPING\r\n".to_vec());
        let mut v = Vec::new();
        encode_command(&mut v, &[b""]);
        assert_eq!(v, b"*1\r\n$0\r\n\r\n".to_vec());
        let mut n = Vec::new();
        push_num(&mut n, 0);
        push_num(&mut n, 1234567890);
        assert_eq!(n, b"01234567890".to_vec());
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b":3\r\n"), Ok(Some((4, Reply::Int(3)))));
        assert_eq!(parse_reply(b":3\r"), Ok(None));
        assert_eq!(parse_reply(b""), Ok(None));
        assert_eq!(parse_reply(b"+OK\r\n:1\r\n"), Ok(Some((5, Reply::Simple))));
        assert_eq!(parse_reply(b"-ERR wrong\r\n"), Ok(Some((12, Reply::Error))));
        assert_eq!(parse_reply(b"$5\r\nhello\r\n"), Ok(Some((11, Reply::Bulk))));
        assert_eq!(parse_reply(b"$5\r\nhel"), Ok(None));
        assert_eq!(parse_reply(b"$-1\r\n"), Ok(Some((5, Reply::Null))));
        let arr = b"*2\r\n$3\r\nfoo\r\n*1\r\n:7\r\n";
        assert_eq!(parse_reply(arr), Ok(Some((arr.len(), Reply::Aggregate))));
        for cut in 0..arr.len() {
            assert_eq!(parse_reply(&arr[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_reply(b"%1\r\n+a\r\n:1\r\n"),
            Ok(Some((12, Reply::Aggregate)))
        );
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b":abc\r\n").is_err());
    }
}
