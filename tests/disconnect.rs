//! `POST /api/users/{U}/disconnect` on real nodes: across two nodes through a real Redis
//! (the control channel), every connection of U on every node is closed with 4004
//! `disconnected by server`, as a strict client parses the close frame, and the socket
//! is closed after it; other users stay connected and keep receiving. Also embedded
//! mode, users without auth (the `?user=` parameter, the connection id), the control
//! channel surviving a Redis restart, and the API's refusals.

mod common;
mod support;
mod wire;

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{raw_upgrade, RedisProcess, TestNode, DEADLINE};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use wire::Frame;

const SECRET: &str = "disconnect-test-secret";
const CONTROL: &str = "__fanout:control";
const KEY: &str = "Authorization: Bearer k\r\n";

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = json!({"sub": sub, "exp": exp, "channels": ["*"], "publish": ["*"]});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// Reads frames until one satisfies `want` (returns it).
fn next_frame(s: &mut TcpStream, want: impl Fn(&Frame) -> bool) -> Frame {
    let bytes = wire::read_until(s, DEADLINE, |frames| frames.iter().any(&want));
    let frames = wire::parse_prefix(&bytes).0;
    frames.into_iter().find(|f| want(f)).unwrap()
}

/// A raw WebSocket authenticated as `sub` and subscribed to `channel`.
fn client(addr: SocketAddr, sub: &str, channel: &str) -> TcpStream {
    let mut s = raw_upgrade(addr);
    wire::send(
        &mut s,
        &wire::text(&json!({"type":"auth","token":token(sub)}).to_string()),
    );
    wire::send(
        &mut s,
        &wire::text(&json!({"type":"subscribe","channel":channel}).to_string()),
    );
    next_frame(
        &mut s,
        |f| matches!(f, Frame::Text(v) if v["type"] == "subscribed"),
    );
    s
}

/// Asserts the server's next frames end with the 4004 close frame, then the socket
/// closes.
fn expect_4004(s: &mut TcpStream, who: &str) {
    let frames = wire::parse_stream(&wire::read_to_eof(s, DEADLINE));
    assert_eq!(
        frames.last(),
        Some(&Frame::Close(Some((4004, "disconnected by server".into())))),
        "{who}: {frames:?}"
    );
}

/// Asserts `s` is open: a publish on `channel` reaches it.
fn expect_delivery(s: &mut TcpStream, node: SocketAddr, channel: &str, n: u32) {
    let body = json!({"channel": channel, "data": n}).to_string();
    assert_eq!(support::post(node, "/api/publish", &body, KEY).status, 202);
    let want = json!({"channel": channel, "data": n});
    next_frame(s, |f| matches!(f, Frame::Text(v) if *v == want));
}

fn disconnect(node: SocketAddr, user: &str) -> support::Response {
    support::post(node, &format!("/api/users/{user}/disconnect"), "", KEY)
}

#[test]
fn a_disconnect_closes_the_user_on_every_node_and_no_one_else() {
    let redis = RedisProcess::start();
    let args = ["--jwt-secret", SECRET, "--api-key", "k", "--shards", "2"];
    let a = TestNode::with_redis(&redis, &args);
    let b = TestNode::with_redis(&redis, &args);
    redis.wait_numsub(CONTROL, 2);
    // Alice twice on node A (two shards), once on B; bob on both.
    let mut alice = [
        client(a.addr, "alice", "room"),
        client(a.addr, "alice", "room"),
        client(b.addr, "alice", "room"),
    ];
    let mut bob_a = client(a.addr, "bob", "room");
    let mut bob_b = client(b.addr, "bob", "room");
    // A user id that only looks like alice's is another user.
    let mut alicia = client(b.addr, "alice:x", "room");

    let r = disconnect(b.addr, "alice");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json(), json!({"disconnected": true}));
    for (i, s) in alice.iter_mut().enumerate() {
        expect_4004(s, &format!("alice #{i}"));
    }
    expect_delivery(&mut bob_a, a.addr, "room", 1);
    expect_delivery(&mut bob_b, b.addr, "room", 2);
    expect_delivery(&mut alicia, a.addr, "room", 3);
    // Percent-encoded user ids are decoded.
    let r = disconnect(a.addr, "alice%3Ax");
    assert_eq!(r.status, 202, "{r:?}");
    expect_4004(&mut alicia, "alice:x");
    expect_delivery(&mut bob_b, a.addr, "room", 4);
    // Alice may come back (keeping her out is the backend's job: no new tokens).
    let mut again = client(a.addr, "alice", "room");
    expect_delivery(&mut again, b.addr, "room", 5);

    // The control channel is resubscribed after Redis restarts.
    let mut redis = redis;
    redis.kill();
    redis.restart();
    redis.wait_numsub(CONTROL, 2);
    common::wait_for("node A publishing again", DEADLINE, || {
        (disconnect(a.addr, "nobody").status == 202).then_some(())
    });
    assert_eq!(disconnect(a.addr, "bob").status, 202);
    expect_4004(&mut bob_a, "bob on A after a Redis restart");
    expect_4004(&mut bob_b, "bob on B after a Redis restart");
}

#[test]
fn embedded_mode_disconnects_directly() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--api-key", "k", "--shards", "2"]);
    let mut carol = [
        client(node.addr, "carol", "c"),
        client(node.addr, "carol", "c"),
    ];
    let mut dan = client(node.addr, "dan", "c");
    assert_eq!(disconnect(node.addr, "carol").status, 202);
    for (i, s) in carol.iter_mut().enumerate() {
        expect_4004(s, &format!("carol #{i}"));
    }
    expect_delivery(&mut dan, node.addr, "c", 1);
}

#[test]
fn without_auth_the_user_is_the_user_parameter_or_the_connection_id() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(
        &redis,
        &["--api-key", "k", "--presence-user-param", "--shards", "2"],
    );
    redis.wait_numsub(CONTROL, 1);
    let open = |query: &str| {
        let mut c = common::WsClient::connect(&format!("{}?{query}", node.url()));
        c.subscribe("n");
        c
    };
    let mut erin = open("user=erin");
    let mut anon = open("x=1");
    let mut other = open("user=frank");
    // The anonymous connection's id, as presence records it.
    let users: Vec<String> = common::wait_for("presence entries", DEADLINE, || {
        let keys: Vec<String> = support::redis_cmd(&redis, &["KEYS", "connections:*"]);
        (keys.len() == 3).then_some(keys)
    })
    .into_iter()
    .map(|k| k.trim_start_matches("connections:").to_string())
    .collect();
    let cid = users
        .iter()
        .find(|u| *u != "erin" && *u != "frank")
        .unwrap_or_else(|| panic!("no connection id among {users:?}"))
        .clone();
    assert_eq!(disconnect(node.addr, "erin").status, 202);
    assert_eq!(ws_close(&mut erin), Some(4004));
    let encoded: String = cid.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    assert_eq!(disconnect(node.addr, &encoded).status, 202);
    assert_eq!(ws_close(&mut anon), Some(4004), "by connection id {cid}");
    other.publish("n", "1");
    assert_eq!(other.expect_json(), json!({"channel":"n","data":1}));
}

/// The close code a tungstenite client sees next.
fn ws_close(c: &mut common::WsClient) -> Option<u16> {
    loop {
        match c.recv_message(DEADLINE)? {
            tungstenite::Message::Close(f) => return Some(f.map_or(1005, |f| f.code.into())),
            _ => continue,
        }
    }
}

#[test]
fn the_api_refuses_what_it_should() {
    let node = TestNode::start(&["--api-key", "k"]);
    let path = "/api/users/u/disconnect";
    assert_eq!(support::post(node.addr, path, "", "").status, 401);
    assert_eq!(
        support::post(node.addr, path, "", "Authorization: Bearer x\r\n").status,
        401
    );
    assert_eq!(support::get(node.addr, path).status, 405);
    for bad in ["%zz", "%0A", "%FF", ""] {
        let r = disconnect(node.addr, bad);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    let long = "a".repeat(257);
    assert_eq!(disconnect(node.addr, &long).status, 400);
    assert_eq!(disconnect(node.addr, &"a".repeat(256)).status, 202);
    assert_eq!(disconnect(node.addr, "a/b").status, 404);
    // Clients cannot reach the control channel.
    let mut c = node.client();
    for cmd in ["subscribe", "publish"] {
        c.send(&json!({"type":cmd,"channel":CONTROL,"data":{"disconnect":"u"}}).to_string());
        assert_eq!(c.expect_json()["code"], "bad_channel", "{cmd}");
    }
    let body = json!({"channel": CONTROL, "data": {"disconnect": "u"}}).to_string();
    assert_eq!(
        support::post(node.addr, "/api/publish", &body, KEY).status,
        400
    );
}
