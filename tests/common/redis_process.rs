//! A real `redis-server` for one test: on a free port, in its own directory (AOF files),
//! restartable on the same port, killed on drop; plus the raw RESP helpers its checks use.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_for, DEADLINE};

/// A real redis-server for one test.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments (they override the defaults: later wins).
    extra: Vec<String>,
    /// Its working directory (AOF files), removed on drop.
    dir: std::path::PathBuf,
}

impl RedisProcess {
    pub fn start() -> RedisProcess {
        Self::start_with(&[])
    }

    /// Starts with extra arguments, e.g. `["--appendonly", "yes"]`.
    pub fn start_with(extra: &[&str]) -> RedisProcess {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fanout-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RedisProcess {
            port,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
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
            .arg("--dir")
            .arg(&self.dir)
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
