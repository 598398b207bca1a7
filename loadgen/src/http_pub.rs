//! HTTP/1.1 publishing (`--publish-via http`, e.g. Nchan's publisher location): one
//! keep-alive connection per publisher, `POST <path>` with the payload as the body,
//! requests pipelined up to `--window`; responses are counted by status (2xx = ack).

use std::io::{self, Read};

use mio::net::TcpStream;

use crate::net::split_host_port;
use crate::redis_pub::{flush_raw, push_num};

/// `--pub-url http://host:port/path/{channel}`.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: std::net::SocketAddr,
    pub host: String,
    /// Path with `{channel}` in it (or not: then every channel posts to the same path).
    pub path: String,
}

/// Parse `http://host[:port]/path` (`{channel}` is replaced per publish).
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--pub-url must start with http:// (got {url})"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok(HttpTarget {
        addr: split_host_port(hostport, 80)?,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// What one read of responses found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Responses {
    /// 2xx responses.
    pub ok: u64,
    /// Other statuses, by code.
    pub failed: Vec<u16>,
    pub open: bool,
}

/// One keep-alive connection with pipelined POSTs.
pub struct HttpConn {
    pub sock: TcpStream,
    pub connected: bool,
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    rbuf: Vec<u8>,
}

/// Append `POST path` with `body` to `out`.
pub fn encode_post(out: &mut Vec<u8>, host: &str, path: &[u8], body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    push_num(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// One complete response at the start of `buf`: Ok(Some((length, status))), Ok(None)
/// when incomplete. Bodies are framed by Content-Length or chunked encoding.
pub fn parse_response(buf: &[u8]) -> Result<Option<(usize, u16)>, String> {
    let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 65536 {
            Err("response head too long".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..h]).map_err(|_| "non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let (mut len, mut chunked) = (0usize, false);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().map_err(|_| "bad Content-Length")?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut pos = h + 4;
    if !chunked {
        return Ok((buf.len() >= pos + len).then_some((pos + len, status)));
    }
    loop {
        let Some(e) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&buf[pos..pos + e])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        pos += e + 2;
        if size == 0 {
            // No trailers expected: the final CRLF.
            return Ok((buf.len() >= pos + 2).then_some((pos + 2, status)));
        }
        pos += size + 2;
        if buf.len() < pos {
            return Ok(None);
        }
    }
}

impl HttpConn {
    pub fn new(sock: TcpStream) -> HttpConn {
        HttpConn {
            sock,
            connected: false,
            wbuf: Vec::new(),
            wpos: 0,
            rbuf: Vec::new(),
        }
    }

    pub fn on_writable(&mut self) -> io::Result<()> {
        if !self.connected {
            if !crate::net::connected(&self.sock)? {
                return Ok(());
            }
            self.connected = true;
        }
        self.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        flush_raw(&mut self.sock, &mut self.wbuf, &mut self.wpos)
    }

    /// Read and count complete responses.
    pub fn on_readable(&mut self) -> io::Result<Responses> {
        let mut buf = [0u8; 65536];
        let mut r = Responses {
            open: true,
            ..Default::default()
        };
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    r.open = false;
                    break;
                }
                Ok(n) => self.rbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut pos = 0;
        while let Some((used, status)) =
            parse_response(&self.rbuf[pos..]).map_err(io::Error::other)?
        {
            pos += used;
            if (200..300).contains(&status) {
                r.ok += 1;
            } else {
                r.failed.push(status);
            }
        }
        self.rbuf.drain(..pos);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed() {
        let a = b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse_response(a), Ok(Some((a.len(), 201))));
        assert_eq!(parse_response(&a[..a.len() - 1]), Ok(None));
        let c = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse_response(c), Ok(Some((c.len(), 202))));
        for cut in 0..c.len() {
            assert_eq!(parse_response(&c[..cut]), Ok(None), "cut {cut}");
        }
        let mut p = Vec::new();
        encode_post(&mut p, "h:1", b"/pub/lg.0", b"{}");
        assert_eq!(
            p,
            b"POST /pub/lg.0 HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".to_vec()
        );
        let t = parse_http_url("http://127.0.0.1:8080/pub/{channel}").unwrap();
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/pub/{channel}")
        );
    }
}
