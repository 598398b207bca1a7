//! Behind a real load balancer: Debian's nginx (run in the foreground with a generated
//! config in a temp dir, killed on drop) in front of three nodes on one Redis. Proves
//! delivery across nodes through it, and that draining a node with SIGTERM loses no
//! client to anything but close 1001: clients reconnect through nginx to the survivors
//! and keep receiving.

mod common;
mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, wait_for, RedisProcess, TestNode, WsClient, DEADLINE};
use serde_json::Value;
use support::{get, post};
use tungstenite::Message;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx for one test.
struct Nginx {
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    fn start(upstreams: &[SocketAddr]) -> Nginx {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("fanout-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream fanout {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fanout;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx must be installed (scripts/test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut n = Nginx {
            addr,
            dir,
            child: Some(child),
        };
        wait_for("nginx to listen", DEADLINE, || {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                panic!("nginx exited: {status}: {}", n.error_log());
            }
            TcpStream::connect(addr).ok()
        });
        n
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn ws(&self, user: &str) -> WsClient {
        WsClient::connect(&format!("ws://{}/?user={user}", self.addr))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for every node to be healthy and puts nginx in front of them.
fn behind_nginx(nodes: &[Option<TestNode>]) -> (Vec<SocketAddr>, Nginx) {
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    for a in &addrs {
        wait_for("node healthy", DEADLINE, || {
            (get(*a, "/healthz").status == 200).then_some(())
        });
    }
    let lb = Nginx::start(&addrs);
    (addrs, lb)
}

/// Subscribes, skipping deliveries already flowing on a busy channel.
fn subscribe(c: &mut WsClient, channel: &str) {
    c.send(&serde_json::json!({"type":"subscribe","channel":channel}).to_string());
    let end = Instant::now() + DEADLINE;
    loop {
        let v = c
            .recv_json(end.saturating_duration_since(Instant::now()))
            .expect("subscribed");
        if v["type"] == "subscribed" {
            return;
        }
    }
}

/// Which node (server id) presence says `user`'s connection is on.
fn node_of(any_node: SocketAddr, user: &str) -> String {
    wait_for(&format!("presence of {user}"), DEADLINE, || {
        let v = get(any_node, &format!("/api/users/{user}/connections")).json();
        v["connections"][0]["serverId"].as_str().map(str::to_string)
    })
}

#[test]
fn cross_node_delivery_through_nginx_and_a_drained_node_loses_no_client() {
    let redis = RedisProcess::start();
    let ids = ["lb-0", "lb-1", "lb-2"];
    let mut nodes: Vec<Option<TestNode>> = ids
        .iter()
        .map(|id| {
            Some(TestNode::with_redis(
                &redis,
                &[
                    "--server-id",
                    id,
                    "--shards",
                    "1",
                    "--presence-user-param",
                    "--presence-heartbeat",
                    "1",
                ],
            ))
        })
        .collect();
    let (addrs, lb) = behind_nginx(&nodes);
    assert_eq!(
        get(lb.addr, "/healthz").status,
        200,
        "health check through nginx"
    );

    // Nine subscribers through nginx, spread over the three nodes.
    let users: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
    let mut clients: Vec<WsClient> = users.iter().map(|u| lb.ws(u)).collect();
    for c in clients.iter_mut() {
        subscribe(c, "room");
    }
    let placed: Vec<String> = users.iter().map(|u| node_of(addrs[0], u)).collect();
    let distinct: std::collections::HashSet<&String> = placed.iter().collect();
    assert_eq!(distinct.len(), 3, "nginx spread the clients: {placed:?}");

    // A publish through nginx (HTTP API on whichever node) reaches every node's clients.
    let r = post(
        lb.addr,
        "/api/publish",
        r#"{"channel":"room","data":{"seq":0}}"#,
        "",
    );
    assert_eq!(r.status, 202, "{r:?}");
    for (i, c) in clients.iter_mut().enumerate() {
        let v = c.expect_json();
        assert_eq!(v["data"]["seq"], 0, "client {i} on {}", placed[i]);
    }

    // A publisher straight into Redis keeps going while a node drains.
    let last = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (last, stop, url) = (last.clone(), stop.clone(), redis.url());
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let _: i64 = redis::cmd("PUBLISH")
                    .arg("room")
                    .arg(format!(r#"{{"seq":{seq}}}"#))
                    .query(&mut conn)
                    .unwrap();
                last.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20)); // pacing, not waiting
            }
        })
    };
    wait_for("publisher running", DEADLINE, || {
        (last.load(Ordering::Relaxed) > 3).then_some(())
    });

    let drained = ids[1];
    let status = nodes[1]
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(15));
    assert!(status.success(), "drained node exit: {status:?}");
    nodes[1] = None;
    let after = last.load(Ordering::Relaxed);

    for (i, c) in clients.iter_mut().enumerate() {
        let on_drained = placed[i] == drained;
        let mut closes = 0;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match c.recv_message(left) {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    let seq = v["data"]["seq"].as_u64().unwrap_or(0);
                    if seq > after && closes == usize::from(on_drained) {
                        break;
                    }
                }
                Some(Message::Close(frame)) => {
                    let code = frame.map(|f| u16::from(f.code));
                    assert_eq!(code, Some(1001), "client {i} closed with {code:?}");
                    assert!(on_drained, "client {i} on {} was closed", placed[i]);
                    closes += 1;
                    *c = lb.ws(&users[i]);
                    subscribe(c, "room");
                }
                Some(Message::Ping(_)) | Some(Message::Pong(_)) => {}
                Some(other) => panic!("client {i}: unexpected {other:?}"),
                None => panic!("client {i} ({}) got nothing after seq {after}", placed[i]),
            }
        }
        assert_eq!(closes, usize::from(on_drained), "client {i}");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let survivors: Vec<String> = users.iter().map(|u| node_of(addrs[0], u)).collect();
    assert!(
        survivors.iter().all(|s| s != drained),
        "everyone is on a survivor: {survivors:?}"
    );
    assert!(placed.iter().any(|p| p == drained), "someone was drained");
}

/// A node drained with SIGTERM during a publish stream on a history channel: its
/// clients get 1001, come back through nginx to the survivors with `since`, and every
/// client sees every message exactly once, in order (issue #11).
#[test]
fn a_drained_node_loses_no_message_on_history_channels() {
    let redis = RedisProcess::start();
    let mut nodes: Vec<Option<TestNode>> = (0..2)
        .map(|i| {
            let id = format!("hl-{i}");
            Some(TestNode::with_redis(
                &redis,
                &[
                    "--server-id",
                    &id,
                    "--shards",
                    "1",
                    "--history-size",
                    "1000",
                ],
            ))
        })
        .collect();
    let (addrs, lb) = behind_nginx(&nodes);
    // Eight clients through nginx (round robin: both nodes), each with its offset.
    let mut clients: Vec<(WsClient, String)> = (0..8)
        .map(|i| {
            let mut c = lb.ws(&format!("h{i}"));
            c.send(r#"{"type":"subscribe","channel":"feed"}"#);
            let v = c.expect_json();
            assert_eq!(v["type"], "subscribed", "{v}");
            (c, v["offset"].as_str().unwrap().to_string())
        })
        .collect();
    // The publisher uses the node that stays.
    let total = 150u64;
    let survivor = addrs[0];
    let publisher = std::thread::spawn(move || {
        for n in 1..=total {
            let body = format!(r#"{{"channel":"feed","data":{{"n":{n}}}}}"#);
            assert_eq!(post(survivor, "/api/publish", &body, "").status, 202);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_millis(400));
    let status = nodes[1]
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(15));
    assert!(status.success(), "drained node exit: {status:?}");
    nodes[1] = None;
    let mut drained = 0;
    for (i, (c, offset)) in clients.iter_mut().enumerate() {
        let mut seen = 0u64;
        while seen < total {
            match c.recv_message(DEADLINE) {
                Some(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert!(v.get("type").is_none(), "client {i}: {v}");
                    let n = v["data"]["n"].as_u64().unwrap();
                    assert_eq!(n, seen + 1, "client {i}: exactly once, in order");
                    seen = n;
                    *offset = v["offset"].as_str().unwrap().to_string();
                }
                Some(Message::Close(frame)) => {
                    let code = frame.map(|f| u16::from(f.code));
                    assert_eq!(code, Some(1001), "client {i}");
                    drained += 1;
                    *c = lb.ws(&format!("h{i}"));
                    c.send(
                        &serde_json::json!({"type":"subscribe","channel":"feed","since":offset})
                            .to_string(),
                    );
                    let v = c.expect_json();
                    assert_eq!(v["type"], "subscribed", "{v}");
                }
                Some(Message::Ping(_)) | Some(Message::Pong(_)) => {}
                Some(other) => panic!("client {i}: unexpected {other:?}"),
                None => panic!("client {i} stuck at {seen}"),
            }
        }
    }
    publisher.join().unwrap();
    assert!(drained >= 1, "someone was on the drained node");
}
