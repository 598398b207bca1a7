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
pub mod proxy;
pub mod tls;

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

/// A real redis-server for one test.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS ports and files: `tls.rs`).
    extra: Vec<String>,
}

impl RedisProcess {
    pub fn start() -> RedisProcess {
        Self::start_with(Vec::new())
    }

    pub fn start_with(extra: Vec<String>) -> RedisProcess {
        let mut r = RedisProcess {
            port: free_port(),
            child: None,
            extra,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ])
            .args(["--enable-debug-command", "yes"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        wait_for("redis to answer PING", DEADLINE, || {
            let mut c = self.try_conn()?;
            redis::cmd("PING").query::<String>(&mut c).ok()
        });
        self.assert_own();
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url()).ok()?.get_connection().ok()
    }

    pub fn conn(&self) -> redis::Connection {
        wait_for("a redis connection", DEADLINE, || self.try_conn())
    }

    pub fn publish(&self, channel: &str, payload: &str) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut self.conn())
            .unwrap()
    }

    /// Number of Redis subscribers of `channel` (PUBSUB NUMSUB).
    pub fn numsub(&self, channel: &str) -> i64 {
        let v: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut self.conn())
            .unwrap();
        v.1
    }

    /// Blocks Redis's event loop for `secs` seconds (`DEBUG SLEEP`, from a connection of
    /// its own), returning once the sleep has begun; join the handle to wait for its end.
    ///
    /// "Begun" is observed, not assumed: a second connection sends `CLIENT LIST` until one
    /// goes unanswered (Redis's event loop is blocked); that reply, when it finally comes
    /// at the end of the sleep, must show the sleeper's connection with `cmd=debug`, so
    /// the block was our `DEBUG SLEEP` and nothing else. (Redis cannot answer `CLIENT
    /// LIST` during the sleep, so it cannot show `cmd=debug` before the sleep ends.)
    pub fn debug_sleep(&self, secs: u32) -> std::thread::JoinHandle<()> {
        use std::io::Write;
        let mut sleeper = TcpStream::connect(("127.0.0.1", self.port)).expect("connect sleeper");
        sleeper.set_read_timeout(Some(DEADLINE)).unwrap();
        let sleeper_id = resp_integer(&mut sleeper, &["CLIENT", "ID"]);
        let mut watcher = TcpStream::connect(("127.0.0.1", self.port)).expect("connect watcher");
        sleeper
            .write_all(&resp_command(&["DEBUG", "SLEEP", &secs.to_string()]))
            .unwrap();
        // A prompt answer means Redis has not reached the DEBUG SLEEP yet; an answer
        // overdue by 300 ms means its event loop is blocked.
        let overdue = Duration::from_millis(300);
        let end = Instant::now() + DEADLINE;
        let mut reader = loop {
            assert!(Instant::now() < end, "DEBUG SLEEP never blocked Redis");
            watcher.set_read_timeout(Some(overdue)).unwrap();
            watcher
                .write_all(&resp_command(&["CLIENT", "LIST"]))
                .unwrap();
            let mut r = BufReader::new(watcher.try_clone().unwrap());
            let mut first = String::new();
            match r.read_line(&mut first) {
                Ok(n) if n > 0 => {
                    let list = read_bulk_rest(&mut r, &first);
                    assert!(
                        !sleeper_line_shows_debug(&list, sleeper_id),
                        "CLIENT LIST answered while DEBUG SLEEP ran: {list}"
                    );
                    std::thread::sleep(Duration::from_millis(5)); // poll pacing
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break r;
                }
                other => panic!("CLIENT LIST failed: {other:?}"),
            }
        };
        std::thread::spawn(move || {
            let slack = Duration::from_secs(u64::from(secs)) + DEADLINE;
            reader.get_ref().set_read_timeout(Some(slack)).unwrap();
            let mut first = String::new();
            reader
                .read_line(&mut first)
                .expect("CLIENT LIST answered after the sleep");
            let list = read_bulk_rest(&mut reader, &first);
            assert!(
                sleeper_line_shows_debug(&list, sleeper_id),
                "Redis was blocked, but not by our DEBUG SLEEP (id {sleeper_id}): {list}"
            );
            sleeper.set_read_timeout(Some(slack)).unwrap();
            let mut r = BufReader::new(sleeper);
            let mut ok = String::new();
            r.read_line(&mut ok).expect("DEBUG SLEEP reply");
            assert_eq!(
                ok, "+OK\r\n",
                "DEBUG SLEEP must run (--enable-debug-command)"
            );
        })
    }

    /// The pid of the redis-server this harness started (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Panics unless the server answering on `port` is the process this harness
    /// started (`process_id` in `INFO server`): after a restart on the same port, a
    /// leftover or foreign redis-server would otherwise be tested by mistake.
    pub fn assert_own(&self) {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.conn())
            .expect("INFO server");
        let pid: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("INFO server has process_id");
        assert_eq!(
            pid,
            self.pid(),
            "port {} is answered by redis pid {pid}, not the one this test started",
            self.port
        );
    }

    pub fn wait_numsub(&self, channel: &str, n: i64) {
        wait_for(&format!("NUMSUB {channel} == {n}"), DEADLINE, || {
            (self.numsub(channel) == n).then_some(())
        });
    }
}

/// One RESP command, encoded.
pub fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
    }
    out
}

fn resp_integer(s: &mut TcpStream, args: &[&str]) -> i64 {
    use std::io::Write;
    s.write_all(&resp_command(args)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).expect("RESP integer reply");
    line.trim_end()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{args:?}: not an integer reply: {line:?}"))
}

/// The rest of a bulk-string reply whose `$N` line was `first`.
fn read_bulk_rest(r: &mut BufReader<TcpStream>, first: &str) -> String {
    use std::io::Read;
    let n: usize = first
        .trim_end()
        .strip_prefix('$')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a bulk reply: {first:?}"));
    let mut body = vec![0u8; n + 2];
    r.read_exact(&mut body).expect("bulk reply body");
    body.truncate(n);
    String::from_utf8(body).expect("CLIENT LIST is text")
}

fn sleeper_line_shows_debug(list: &str, id: i64) -> bool {
    list.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.contains(&format!("id={id}").as_str()) && fields.contains(&"cmd=debug")
    })
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
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

    pub fn spawn(mut cmd: Command) -> TestNode {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn");
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
