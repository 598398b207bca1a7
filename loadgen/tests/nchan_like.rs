//! Integration: loadgen's `--sub-path` and `--publish-via http` against a tiny server
//! written here that imitates Nchan's two endpoints (no nginx needed): `GET /sub/<channel>`
//! upgrades to a WebSocket whose frames are the raw published bodies (no envelope, and
//! the server ignores anything the client sends), and `POST /pub/<channel>` on a
//! keep-alive HTTP/1.1 connection publishes its body, answered `202 Accepted` with a
//! text body like Nchan's. The test asserts loadgen's delivered counts from its JSON,
//! and that it used one HTTP connection per publisher and sent no subscribe frames.

mod fake_ws;
mod run;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use run::loadgen;
use serde_json::Value;
use tungstenite::handshake::server::{Request, Response};

#[derive(Default)]
struct Server {
    subs: Mutex<HashMap<String, Vec<Sender<String>>>>,
    http_conns: AtomicU64,
    posts: AtomicU64,
    /// Text frames WebSocket subscribers sent (Nchan subscribers need none).
    client_frames: AtomicU64,
}

// tungstenite's handshake callback returns its (large) ErrorResponse type.
#[allow(clippy::result_large_err)]
fn subscriber(stream: TcpStream, srv: Arc<Server>) {
    let mut path = String::new();
    let Ok(mut ws) = tungstenite::accept_hdr(stream, |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    }) else {
        return;
    };
    let Some(ch) = path.strip_prefix("/sub/") else {
        return;
    };
    let (tx, rx) = mpsc::channel::<String>();
    srv.subs
        .lock()
        .expect("subs")
        .entry(ch.to_string())
        .or_default()
        .push(tx);
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(2)));
    while fake_ws::turn(&mut ws, &rx, |_, _| {
        srv.client_frames.fetch_add(1, Ordering::Relaxed);
    }) {}
}

fn publisher(stream: TcpStream, srv: Arc<Server>) {
    srv.http_conns.fetch_add(1, Ordering::Relaxed);
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut it = line.split_whitespace();
        let (method, path) = (it.next().unwrap_or(""), it.next().unwrap_or("").to_string());
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("Content-Length");
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (Some(ch), "POST") = (path.strip_prefix("/pub/"), method) else {
            let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        srv.posts.fetch_add(1, Ordering::Relaxed);
        let body = String::from_utf8(body).expect("UTF-8 body");
        let mut n = 0;
        if let Some(v) = srv.subs.lock().expect("subs").get_mut(ch) {
            v.retain(|s| s.send(body.clone()).is_ok());
            n = v.len();
        }
        let text = format!(
            "queued messages: 0\r\nlast requested: 0 sec. ago\r\nactive subscribers: {n}\r\nlast message id: 0:-1\r\n"
        );
        let resp = format!(
            "HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Route a connection by its request head: WebSocket upgrade or plain HTTP.
fn serve(stream: TcpStream, srv: Arc<Server>) {
    let mut head = [0u8; 4096];
    loop {
        let n = stream.peek(&mut head).unwrap_or(0);
        if n == 0 {
            return;
        }
        if head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            let h = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
            if h.contains("upgrade: websocket") {
                return subscriber(stream, srv);
            }
            return publisher(stream, srv);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn start() -> (u16, Arc<Server>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let srv = Arc::new(Server::default());
    let s2 = srv.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let srv = s2.clone();
            std::thread::spawn(move || serve(s, srv));
        }
    });
    (port, srv)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn sub_path_and_http_publishing_deliver_everything() {
    let (port, srv) = start();
    let (subs, channels, pubs) = (12u64, 4u64, 2u64);
    let url = format!("ws://127.0.0.1:{port}/");
    let pub_url = format!("http://127.0.0.1:{port}/pub/{{channel}}");
    let (subs_s, channels_s, pubs_s) = (subs.to_string(), channels.to_string(), pubs.to_string());
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--sub-path",
        "/sub/{channel}",
        "--publish-via",
        "http",
        "--pub-url",
        &pub_url,
        "--subs",
        &subs_s,
        "--channels",
        &channels_s,
        "--pubs",
        &pubs_s,
        "--rate",
        "400",
        "--payload",
        "128",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--drain",
        "2",
    ]);
    let n = u(&r, "published");
    assert!(n >= 300, "publishers kept up: {n} in {r}");
    assert_eq!(u(&r, "subscribed"), subs, "{r}");
    assert_eq!(r["publish_via"], "http", "{r}");
    // Every subscriber gets every publish of its channel: subs/channels per publish.
    let expected = n * subs / channels;
    assert_eq!(u(&r, "expected"), expected, "{r}");
    assert_eq!(u(&r, "delivered"), expected, "{r}");
    for k in [
        "lost",
        "duplicates",
        "reordered",
        "in_flight_at_deadline",
        "foreign_deliveries",
    ] {
        assert_eq!(u(&r, k), 0, "{k} in {r}");
    }
    assert_eq!(u(&r, "publish_errors"), 0, "{r}");
    assert_eq!(u(&r, "publish_acks"), u(&r, "published_total"), "{r}");
    assert_eq!(srv.posts.load(Ordering::Relaxed), u(&r, "published_total"));
    // One keep-alive connection per publisher, and no subscribe frames on the WebSockets.
    assert_eq!(srv.http_conns.load(Ordering::Relaxed), pubs);
    assert_eq!(srv.client_frames.load(Ordering::Relaxed), 0);
}
