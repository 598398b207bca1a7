//! `rediss://` against a real `redis-server` with a TLS port and a CA made by the test:
//! reader, writer, presence and history all over TLS (end to end, large messages, an
//! ACL user whose password needs percent-encoding); a wrong CA or host name said plainly
//! (`/healthz`, counter, log) and retried with backoff; `--redis-insecure` said loudly;
//! a bad `--redis-ca` stops the start like any other config error.

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tls::{Pki, TlsRedis};
use common::{wait_for, TestNode, WsClient, DEADLINE};
use serde_json::json;
use support::{get, metric, post, redis_cmd, ws_presence};

const SAN: &str = "DNS:localhost,IP:127.0.0.1";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn healthy(addr: SocketAddr) -> String {
    wait_for("the node healthy", DEADLINE, || {
        let r = get(addr, "/healthz");
        (r.status == 200).then(|| r.json()["detail"].as_str().unwrap().to_string())
    })
}

fn user_client(node: &TestNode, user: &str) -> WsClient {
    WsClient::connect(&format!("ws://{}/?user={user}", node.addr))
}

/// A node whose stderr goes to a file the test reads (the log lines), killed on drop.
struct LoggedNode {
    addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
}

impl LoggedNode {
    fn start(args: &[&str], log_dir: &Path) -> LoggedNode {
        let log = log_dir.join(format!("node-{}.log", common::free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["--listen", "127.0.0.1:0", "--presence", "off"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start fanout");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("no listening line: {line:?}"))
            .parse()
            .unwrap();
        LoggedNode { addr, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_rediss_node_with_a_private_ca_works_end_to_end() {
    let pki = Pki::new("ok");
    let r = TlsRedis::start(&pki, SAN);
    let ca = pki.ca();
    let common = [
        "--redis-ca",
        path(&ca),
        "--presence-user-param",
        "--max-message",
        "1048576",
    ];
    // One node by host name (SNI, DNS name checked), one by IP address.
    let by_name = r.url("", "localhost");
    let by_ip = r.url("", "127.0.0.1");
    let a = TestNode::start(&[&["--redis", &by_name, "--server-id", "a"], &common[..]].concat());
    let b = TestNode::start(&[&["--redis", &by_ip, "--server-id", "b"], &common[..]].concat());
    assert_eq!(healthy(a.addr), "redis");
    assert_eq!(healthy(b.addr), "redis");
    // Reader, writer and presence of both nodes, all on the TLS port.
    wait_for("six TLS clients", DEADLINE, || {
        (r.tls_clients() == 6).then_some(())
    });

    let mut alice = user_client(&a, "alice");
    alice.subscribe("tls");
    // Published on the other node over the WebSocket, …
    let mut bob = user_client(&b, "bob");
    bob.publish("tls", r#"{"n":1}"#);
    assert_eq!(alice.expect_json(), json!({"channel":"tls","data":{"n":1}}));
    // … through the HTTP API, …
    let resp = post(b.addr, "/api/publish", r#"{"channel":"tls","data":2}"#, "");
    assert!(resp.status < 300, "{}", resp.head);
    assert_eq!(alice.expect_json()["data"], 2);
    // … and by another Redis client.
    r.redis.publish("tls", "3");
    assert_eq!(alice.expect_json()["data"], 3);

    // Messages larger than a TLS record and than rustls's buffers, both ways: partial
    // writes and reads that span many records.
    for i in 0..8 {
        let big = format!("\"{}{}\"", i, "x".repeat(700 * 1024));
        bob.publish("tls", &big);
        let got = alice.expect_json();
        assert_eq!(got["data"].as_str().unwrap().len(), 700 * 1024 + 1, "#{i}");
        assert!(got["data"].as_str().unwrap().starts_with(&i.to_string()));
    }

    // Presence over TLS: written by a's presence thread, read by b's.
    wait_for("alice online, seen from b", DEADLINE, || {
        let v = ws_presence(&mut bob, "alice");
        (v["online"] == true && v["connections"][0]["serverId"] == "a").then_some(())
    });
}

#[test]
fn an_acl_user_with_a_percent_encoded_password_works_over_tls() {
    let pki = Pki::new("acl");
    let r = TlsRedis::start(&pki, SAN);
    let _: () = redis_cmd(
        &r.redis,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">p@ss:w/d",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let url = r.url("app:p%40ss%3Aw%2Fd@", "localhost");
    let ca = pki.ca();
    let url = format!("{url}/1");
    let node = TestNode::start(&[
        "--redis",
        &url,
        "--redis-ca",
        path(&ca),
        "--presence-user-param",
        "--history-size",
        "10",
    ]);
    healthy(node.addr);
    let mut sub = user_client(&node, "carol");
    sub.send(r#"{"type":"subscribe","channel":"acl"}"#);
    assert_eq!(sub.expect_json()["type"], "subscribed"); // with an offset: history is on
    let mut publisher = node.client();
    publisher.publish("acl", "\"over tls\"");
    assert_eq!(sub.expect_json()["data"], "over tls");
    assert_eq!(ws_presence(&mut publisher, "carol")["online"], true);
    // History (Lua scripts over the writer's link) over TLS too.
    publisher.send(r#"{"type":"history","channel":"acl","limit":5}"#);
    let v = publisher.expect_json();
    assert_eq!(v["type"], "history", "{v}");
    assert_eq!(v["messages"][0]["data"], "over tls", "{v}");
    // Every TLS connection is logged in as `app`, and presence wrote into db 1.
    let list: String = redis_cmd(&r.redis, &["CLIENT", "LIST"]);
    let laddr = format!("laddr=127.0.0.1:{}", r.tls_port);
    let tls: Vec<&str> = list.lines().filter(|l| l.contains(&laddr)).collect();
    assert_eq!(tls.len(), 3, "{list}");
    assert!(tls.iter().all(|l| l.contains(" user=app ")), "{list}");
    let n: i64 = redis::cmd("EXISTS")
        .arg("connections:carol")
        .query(&mut {
            let mut c = r.redis.conn();
            let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
            c
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_wrong_ca_or_host_name_fails_clearly_and_is_retried_with_backoff() {
    let pki = Pki::new("right");
    let r = TlsRedis::start(&pki, SAN);
    let other = Pki::new("other");
    let elsewhere = TlsRedis::start(&pki, "DNS:elsewhere.test");
    let started = std::time::Instant::now();
    let logs = other.dir.clone();
    let other_ca = other.ca();
    let wrong_ca = LoggedNode::start(
        &[
            "--redis",
            &r.url("", "localhost"),
            "--redis-ca",
            path(&other_ca),
        ],
        &logs,
    );
    let right_ca = pki.ca();
    let wrong_host = LoggedNode::start(
        &[
            "--redis",
            &elsewhere.url("", "127.0.0.1"),
            "--redis-ca",
            path(&right_ca),
        ],
        &logs,
    );
    for (node, why) in [
        (&wrong_ca, "UnknownIssuer"),
        (&wrong_host, "not valid for name"),
    ] {
        let detail = wait_for("/healthz to say TLS failed", DEADLINE, || {
            let h = get(node.addr, "/healthz");
            let d = h.json()["detail"].as_str().unwrap_or("").to_string();
            (h.status == 503 && d.contains("TLS handshake failed")).then_some(d)
        });
        assert!(detail.contains("--redis-ca"), "{detail}");
        wait_for("the counter", DEADLINE, || {
            (metric(node.addr, "fanout_redis_tls_failed_total") >= 2.0).then_some(())
        });
        let log = wait_for("the log line", DEADLINE, || {
            let log = node.log();
            log.contains(why).then_some(log)
        });
        assert!(log.contains("Redis TLS handshake with"), "{log}");
    }
    // Retried with the backoff of a lost connection (each failed handshake is counted):
    // two links at 0.1, 0.2, 0.4, 0.8, 1.6 s make about 12 tries in 4 s, not hundreds.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    for node in [&wrong_ca, &wrong_host] {
        let tries = metric(node.addr, "fanout_redis_tls_failed_total");
        assert!(
            tries <= 16.0,
            "{tries} handshakes in {:?}",
            started.elapsed()
        );
    }
    assert_eq!(r.tls_clients(), 0);

    // Redis gets a certificate for the name the node uses: the next handshake succeeds
    // and the error clears by itself.
    let (cert, key) = pki.server_cert("fixed", SAN);
    let _: () = redis_cmd(
        &elsewhere.redis,
        &[
            "CONFIG",
            "SET",
            "tls-cert-file",
            path(&cert),
            "tls-key-file",
            path(&key),
        ],
    );
    assert_eq!(healthy(wrong_host.addr), "redis");
}

#[test]
fn a_redis_restart_over_tls_is_repaired_with_a_gap() {
    let pki = Pki::new("restart");
    let mut r = TlsRedis::start(&pki, SAN);
    let ca = pki.ca();
    let node = TestNode::start(&[
        "--redis",
        &r.url("", "localhost"),
        "--redis-ca",
        path(&ca),
        "--presence",
        "off",
    ]);
    healthy(node.addr);
    let mut sub = node.client();
    sub.subscribe("r");
    r.redis.kill();
    r.redis.restart();
    // The reader reconnects (TLS again), resubscribes and says what may be lost.
    let gap = wait_for("a gap", DEADLINE, || {
        sub.recv_json(Duration::from_millis(200))
            .filter(|v| v["type"] == "gap")
    });
    assert_eq!(gap, json!({"type":"gap","channel":"r"}));
    healthy(node.addr);
    // The writer is back too: a publish with an id is confirmed and delivered.
    let mut publisher = node.client();
    wait_for("a confirmed publish", DEADLINE, || {
        publisher.send(r#"{"type":"publish","channel":"r","data":"back","id":1}"#);
        (publisher.expect_json()["type"] == "published").then_some(())
    });
    let v = wait_for("the delivery", DEADLINE, || {
        sub.recv_json(Duration::from_millis(200))
            .filter(|v| v["data"] == "back")
    });
    assert_eq!(v["channel"], "r");
}

#[test]
fn redis_insecure_connects_and_says_so_loudly() {
    let pki = Pki::new("insecure");
    let r = TlsRedis::start(&pki, SAN);
    let node = LoggedNode::start(
        &["--redis", &r.url("", "127.0.0.1"), "--redis-insecure"],
        &pki.dir,
    );
    let detail = healthy(node.addr);
    assert!(detail.contains("NOT verified"), "{detail}");
    assert!(node.log().contains("WARN"), "{}", node.log());
    assert!(node.log().contains("--redis-insecure"), "{}", node.log());
    let mut sub = WsClient::connect(&format!("ws://{}/", node.addr));
    sub.subscribe("insecure");
    r.redis.publish("insecure", "1");
    assert_eq!(sub.expect_json()["data"], 1);
}

/// Runs `fanout ARGS` (with `env`) expecting it to refuse to start: exit code, stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .output()
        .expect("run fanout");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_ca_file_stops_the_start_like_any_config_error() {
    let dir = std::env::temp_dir().join(format!("fanout-badca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let url = "rediss://127.0.0.1:1";
    for (args, env, says) in [
        (
            vec!["--redis", url, "--redis-ca", "/nonexistent/ca.pem"],
            vec![],
            "cannot read --redis-ca /nonexistent/ca.pem",
        ),
        (
            vec!["--redis", url, "--redis-ca", path(&not_pem)],
            vec![],
            "holds no certificate",
        ),
        (
            vec!["--redis", url],
            vec![("REDIS_CA", "/nonexistent/env.pem")],
            "--redis-ca /nonexistent/env.pem",
        ),
        (
            vec!["--redis", "redis://127.0.0.1:1", "--redis-insecure"],
            vec![],
            "needs --redis rediss://",
        ),
        (
            vec!["--redis", "redis://127.0.0.1:1"],
            vec![("REDIS_INSECURE", "true")],
            "--redis-insecure applies to TLS connections only",
        ),
        (
            vec![
                "--redis",
                url,
                "--redis-insecure",
                "--redis-ca",
                path(&not_pem),
            ],
            vec![],
            "exclude each other",
        ),
    ] {
        let (code, err) = refused_start(&args, &env);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The TOML file takes the same settings.
    let toml = dir.join("tls.toml");
    std::fs::write(
        &toml,
        format!("redis = \"{url}\"\nredis_ca = \"/nonexistent/toml.pem\"\n"),
    )
    .unwrap();
    let (code, err) = refused_start(&["--config", path(&toml)], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/toml.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
