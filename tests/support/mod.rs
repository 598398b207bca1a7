//! Helpers for the HTTP API, presence and load-balancer tests: raw HTTP requests with a
//! deadline (so a server that hangs fails the test instead of blocking it), Prometheus
//! text scraping, WebSocket upgrades with extra headers, and a few Redis commands.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{RedisProcess, WsClient, DEADLINE};

pub mod history;

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `raw` bytes and reads until the server closes; panics if it does not within
/// the deadline (a hang is a failure).
pub fn raw(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(raw).expect("write request");
    let end = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    Instant::now() < end,
                    "server did not answer and close: got {:?}",
                    String::from_utf8_lossy(&out)
                );
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// POST with `body` and extra header lines (each ending in \r\n).
pub fn post(addr: SocketAddr, path: &str, body: &str, headers: &str) -> Response {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Sum of every sample of metric `name` (all label sets), from `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A WebSocket upgrade with extra headers; the handshake error on refusal.
pub fn ws_with_headers(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let authority = req.uri().authority().unwrap().to_string();
    let stream = TcpStream::connect(authority).expect("tcp connect");
    stream.set_nodelay(true).unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => {
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            Ok(WsClient { ws })
        }
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake interrupted"),
    }
}

/// The status of a refused upgrade.
pub fn refused_status(e: &tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Asks presence about `user` over the WebSocket.
pub fn ws_presence(client: &mut WsClient, user: &str) -> Value {
    client.send(&serde_json::json!({"type":"presence","user":user}).to_string());
    let v = client.expect_json();
    assert_eq!(v["type"], "presence", "{v}");
    v
}

/// Runs one Redis command.
pub fn redis_cmd<T: redis::FromRedisValue>(r: &RedisProcess, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut r.conn())
        .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
}
