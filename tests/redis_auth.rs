//! Redis credentials: a percent-encoded password in the URL is decoded (`p%40ss` is
//! `p@ss`, as redis-cli reads it), and a refused login is retried with the growing
//! backoff of a lost connection, not at once, and reported in `/healthz` and a counter.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{wait_for, RedisProcess, TestNode, DEADLINE};

const PASSWORD: &str = "p@ss:w/d";

/// A Redis that requires `PASSWORD`, and a connection to it.
fn protected() -> (RedisProcess, redis::Connection) {
    let redis = RedisProcess::start();
    let mut c = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query(&mut c)
        .unwrap();
    let url = format!("redis://:p%40ss%3Aw%2Fd@127.0.0.1:{}", redis.port);
    let conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    (redis, conn)
}

#[test]
fn a_percent_encoded_password_is_decoded() {
    let (redis, _admin) = protected();
    let url = format!("redis://:p%40ss%3Aw%2Fd@127.0.0.1:{}", redis.port);
    let node = TestNode::start(&["--redis", &url]);
    wait_for(
        "the node healthy with the decoded password",
        DEADLINE,
        || (support::get(node.addr, "/healthz").status == 200).then_some(()),
    );
    let mut sub = node.client();
    sub.subscribe("auth");
    let mut publisher = node.client();
    publisher.publish("auth", "1");
    assert_eq!(sub.expect_json()["data"], 1);
}

#[test]
fn a_refused_login_is_retried_with_backoff() {
    let (redis, mut admin) = protected();
    let url = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let connections = |c: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let before = connections(&mut admin);
    let node = TestNode::start(&["--redis", &url, "--presence", "off"]);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let tries = connections(&mut admin) - before;
    // Two links (reader, writer) with backoff 0.1, 0.2, 0.4, 0.8, 1.6 s: about 5 each
    // in 4 s. Retrying at once after every refusal made it ~80.
    assert!(tries <= 16, "{tries} connections in {:?}", start.elapsed());
    // Said plainly: in /healthz and in a counter.
    let health = support::get(node.addr, "/healthz");
    assert_eq!(health.status, 503);
    assert!(
        health.json()["detail"]
            .as_str()
            .unwrap()
            .contains("refused our credentials"),
        "{}",
        health.body
    );
    assert!(support::metric(node.addr, "fanout_redis_auth_refused_total") >= 2.0);
    // Fixed credentials: the refusal clears once a login succeeds.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong")
        .query(&mut admin)
        .unwrap();
    wait_for("healthy once Redis accepts the password", DEADLINE, || {
        (support::get(node.addr, "/healthz").status == 200).then_some(())
    });
}

/// Secrets never reach a log line: not the Redis password of the URL (logged at
/// startup, redacted) even while Redis refuses it, and not a client's token, whether it
/// came in the upgrade URL or in an auth message that was refused. Logs at `debug`, the
/// most a production node would run with.
#[test]
fn passwords_and_tokens_never_reach_the_logs() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (redis, _admin) = protected();
    let secret = "Sup3rS3cretPw";
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.TOKENSIGNATUREvalue";
    let log = std::env::temp_dir().join(format!("fanout-secrets-{}.log", common::free_port()));
    let url = format!("redis://default:{secret}@127.0.0.1:{}", redis.port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--jwt-secret",
            "k",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    // A refused login is logged (and retried) a few times.
    std::thread::sleep(Duration::from_millis(600));
    // A token in the URL, and one in a refused auth message.
    let _ = tungstenite::connect(format!("ws://{addr}/?token={token}"));
    if let Ok((mut ws, _)) = tungstenite::connect(format!("ws://{addr}/")) {
        let _ = ws.send(tungstenite::Message::text(format!(
            r#"{{"type":"auth","token":"{token}"}}"#
        )));
        let _ = ws.read();
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("fanout started"),
        "the startup line is logged: {text}"
    );
    assert!(text.contains(":***@"), "the URL is logged redacted: {text}");
    assert!(
        !text.contains(secret),
        "the Redis password leaked into the log:\n{text}"
    );
    assert!(
        !text.contains("TOKENSIGNATURE"),
        "a token leaked into the log:\n{text}"
    );
}
