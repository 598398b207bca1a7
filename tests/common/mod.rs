//! Test harness: a real `redis-server` on a free port (killed on drop), real `fanout`
//! nodes started from the built binary (killed on drop), and a WebSocket client with
//! deadline-based waits. Tests never sleep to wait for something: they wait for the
//! event itself, with a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::{Message, WebSocket};

pub mod cluster;
pub mod cluster_kit;
pub mod proxy;
mod redis_process;
pub mod tls;

pub use redis_process::{resp_command, RedisProcess};

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A TOML config file for `--config`, removed on drop.
pub struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    pub fn new(name: &str, text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "fanout-test-{name}-{}-{}.toml",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until `f` returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real fanout node started from the test binary.
pub struct TestNode {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl TestNode {
    /// Starts a node with `args` (plus `--listen 127.0.0.1:0`) and waits for its
    /// `listening ADDR` line.
    pub fn start(args: &[&str]) -> TestNode {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        Self::spawn(cmd)
    }

    pub fn with_redis(redis: &RedisProcess, extra: &[&str]) -> TestNode {
        let url = redis.url();
        let mut args = vec!["--redis", url.as_str()];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// `with_redis` with the reader and writer where `broker` says.
    pub fn with_redis_in(redis: &RedisProcess, broker: Broker, extra: &[&str]) -> TestNode {
        Self::with_redis(redis, &broker.with(extra))
    }

    pub fn spawn(mut cmd: Command) -> TestNode {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).env(
            "RUST_LOG",
            std::env::var("FANOUT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let mut child = cmd.spawn().expect("start fanout");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("fanout printed no listening line");
        let addr = line
            .strip_prefix("listening ")
            .expect("listening line")
            .parse()
            .unwrap();
        TestNode {
            addr,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn client(&self) -> WsClient {
        WsClient::connect(&self.url())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status (panics after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_kill(child.id(), 15);
        wait_for("fanout to exit", timeout, || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Where a node runs its Redis reader and writer (`--broker-threads`). The Redis
/// behaviour tests run in both modes: each takes a `Broker` and `in_both_broker_modes!`
/// makes an `own::` and an `inline::` test of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    Own,
    Inline,
}

impl Broker {
    /// `extra` plus this mode's flag.
    pub fn with<'a>(self, extra: &[&'a str]) -> Vec<&'a str> {
        let mode = match self {
            Broker::Own => "own",
            Broker::Inline => "inline",
        };
        let mut args = extra.to_vec();
        args.extend(["--broker-threads", mode]);
        args
    }
}

/// For each test function `f(broker: Broker)` named: `own::f` and `inline::f`.
#[macro_export]
macro_rules! in_both_broker_modes {
    ($($name:ident),* $(,)?) => {
        mod own {
            $( #[test] fn $name() { super::$name($crate::common::Broker::Own) } )*
        }
        mod inline {
            $( #[test] fn $name() { super::$name($crate::common::Broker::Inline) } )*
        }
    };
}

/// How long one socket read of a [`WsClient`] may block. It is a poll slice, never a
/// deadline: `recv_message` treats a timed-out read as "nothing yet" and keeps reading
/// until its own deadline (tungstenite keeps a partly read frame across the timeout).
pub const POLL_SLICE: Duration = Duration::from_millis(100);

/// A blocking WebSocket client (tungstenite) with deadline-based receive.
pub struct WsClient {
    pub ws: WebSocket<TcpStream>,
}

impl WsClient {
    pub fn connect(url: &str) -> WsClient {
        let addr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&addr).expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        let (ws, _) = tungstenite::client(url, stream).expect("websocket handshake");
        ws.get_ref().set_read_timeout(Some(POLL_SLICE)).unwrap();
        WsClient { ws }
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// The next message (any kind), or None at the deadline.
    pub fn recv_message(&mut self, timeout: Duration) -> Option<Message> {
        let end = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(m) => return Some(m),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() > end {
                        return None;
                    }
                }
                Err(e) => panic!("websocket read failed: {e}"),
            }
        }
    }

    /// The next text message as JSON, skipping pings; None at the deadline.
    pub fn recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv_message(left)? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sent invalid JSON"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    pub fn expect_json(&mut self) -> Value {
        self.recv_json(DEADLINE)
            .expect("a message before the deadline")
    }

    /// Asserts that nothing arrives within `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(v) = self.recv_json(quiet) {
            panic!("expected nothing, got {v}");
        }
    }

    pub fn subscribe(&mut self, channel: &str) {
        self.send(&serde_json::json!({"type":"subscribe","channel":channel}).to_string());
        let v = self.expect_json();
        assert_eq!(
            v,
            serde_json::json!({"type":"subscribed","channel":channel})
        );
    }

    pub fn publish(&mut self, channel: &str, data: &str) {
        self.send(&format!(
            r#"{{"type":"publish","channel":{},"data":{data}}}"#,
            serde_json::to_string(channel).unwrap()
        ));
    }
}

/// The status code of `GET /healthz`, or 0 when the node does not answer.
pub fn healthz(addr: SocketAddr) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(DEADLINE));
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A WebSocket upgrade request for raw-socket tests.
pub const UPGRADE_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw TCP socket upgraded to WebSocket by hand (the 101 head read and checked), for
/// tests that must misbehave or must not allocate per message on the client side.
pub fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    upgrade_stream(TcpStream::connect(addr).expect("tcp connect"))
}

/// `raw_upgrade` with a receive buffer of `bytes`: what the client does not read then
/// waits in the server, not in the kernel's autotuned buffers (which absorb megabytes,
/// a different amount for each socket).
pub fn raw_upgrade_small_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("tcp connect");
    upgrade_stream(sock.into())
}

fn upgrade_stream(mut s: TcpStream) -> TcpStream {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(UPGRADE_REQUEST).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head)
    );
    s
}
