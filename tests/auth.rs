//! Connection authentication (JWT) against real nodes: the token matrix on both
//! transports (the upgrade URL and the auth message), channel permissions, refresh and
//! expiry, the time allowed to authenticate, the Bearer header, presence under `sub`.
//! Tokens are minted with the `jsonwebtoken` crate; keys are in tests/fixtures/.

mod common;
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{wait_for, TestNode, WsClient, DEADLINE};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{refused_status, ws_with_headers};
use tungstenite::Message;

const SECRET: &str = "test-secret-of-some-length";
const RSA_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rsa_public.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_private.pem");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/rsa_public.pem");
const EC_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ec_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec_private.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, exp_in: i64) -> Value {
    json!({
        "sub": sub,
        "exp": (now() as i64 + exp_in),
        "channels": ["news", "room:*"],
        "publish": ["room:1"],
    })
}

fn hs(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn rs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
    .unwrap()
}

fn es(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    )
    .unwrap()
}

fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `alg: none`, no signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// The close code the server sends next (skipping other messages), or None.
fn close_code(c: &mut WsClient, timeout: Duration) -> Option<u16> {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match c.recv_message(left)? {
            Message::Close(Some(f)) => return Some(f.code.into()),
            Message::Close(None) => return Some(1005),
            _ => continue,
        }
    }
}

fn auth_msg(token: &str) -> String {
    json!({"type":"auth","token":token}).to_string()
}

/// Whether a subscribe to "news" works on this connection (else its error code).
fn subscribe_news(c: &mut WsClient) -> Result<(), String> {
    c.send(r#"{"type":"subscribe","channel":"news"}"#);
    let v = c.expect_json();
    match v["type"].as_str() {
        Some("subscribed") => Ok(()),
        _ => Err(v["code"].as_str().unwrap_or("?").to_string()),
    }
}

struct Nodes {
    hs: TestNode,
    rs: TestNode,
    es: TestNode,
    aud: TestNode,
}

impl Nodes {
    fn start() -> Nodes {
        Nodes {
            hs: TestNode::start(&["--jwt-secret", SECRET]),
            rs: TestNode::start(&["--jwt-public-key", RSA_PUBLIC]),
            es: TestNode::start(&["--jwt-public-key", EC_PUBLIC]),
            aud: TestNode::start(&["--jwt-secret", SECRET, "--jwt-audience", "app"]),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Node {
    Hs,
    Rs,
    Es,
    Aud,
}

#[test]
fn the_token_matrix_on_the_upgrade_and_in_the_auth_message() {
    let nodes = Nodes::start();
    let mut aud_ok = claims("alice", 60);
    aud_ok["aud"] = json!("app");
    let mut aud_other = claims("alice", 60);
    aud_other["aud"] = json!("other");
    let mut nbf = claims("alice", 600);
    nbf["nbf"] = json!(now() + 300);
    let mut no_exp = claims("alice", 60);
    no_exp.as_object_mut().unwrap().remove("exp");
    let secret = SECRET.as_bytes();
    // (case, node, token, accepted)
    let cases: Vec<(&str, Node, String, bool)> = vec![
        ("garbage", Node::Hs, "not.a.token".into(), false),
        ("alg none", Node::Hs, unsigned(&claims("alice", 60)), false),
        (
            "alg none vs RSA",
            Node::Rs,
            unsigned(&claims("alice", 60)),
            false,
        ),
        (
            "HS256 with the RSA public key as secret",
            Node::Rs,
            hs(RSA_PUBLIC_PEM, &claims("alice", 60)),
            false,
        ),
        (
            "wrong secret",
            Node::Hs,
            hs(b"other-secret", &claims("alice", 60)),
            false,
        ),
        (
            "RS256 against HS256",
            Node::Hs,
            rs(&claims("alice", 60)),
            false,
        ),
        (
            "ES256 against RSA",
            Node::Rs,
            es(&claims("alice", 60)),
            false,
        ),
        (
            "expired",
            Node::Hs,
            hs(secret, &claims("alice", -10)),
            false,
        ),
        ("no exp", Node::Hs, hs(secret, &no_exp), false),
        ("not yet valid", Node::Hs, hs(secret, &nbf), false),
        (
            "no audience",
            Node::Aud,
            hs(secret, &claims("alice", 60)),
            false,
        ),
        ("wrong audience", Node::Aud, hs(secret, &aud_other), false),
        (
            "valid HS256",
            Node::Hs,
            hs(secret, &claims("alice", 60)),
            true,
        ),
        ("valid RS256", Node::Rs, rs(&claims("alice", 60)), true),
        ("valid ES256", Node::Es, es(&claims("alice", 60)), true),
        ("valid with audience", Node::Aud, hs(secret, &aud_ok), true),
    ];
    for (case, node, token, accepted) in cases {
        let node = match node {
            Node::Hs => &nodes.hs,
            Node::Rs => &nodes.rs,
            Node::Es => &nodes.es,
            Node::Aud => &nodes.aud,
        };
        // On the upgrade URL: 101 and authenticated, or 401.
        let url = format!("{}?token={token}", node.url());
        match (ws_with_headers(&url, &[]), accepted) {
            (Ok(mut c), true) => {
                let v = c.expect_json();
                assert_eq!(v["type"], "authenticated", "{case}: {v}");
                assert_eq!(v["sub"], "alice", "{case}");
                assert_eq!(subscribe_news(&mut c), Ok(()), "{case}");
            }
            (Err(e), false) => assert_eq!(refused_status(&e), 401, "{case}"),
            (Ok(_), false) => panic!("{case}: upgrade admitted"),
            (Err(e), true) => panic!("{case}: upgrade refused: {e}"),
        }
        // In the auth message: authenticated, or closed with 4001.
        let mut c = node.client();
        c.send(&auth_msg(&token));
        if accepted {
            let v = c.expect_json();
            assert_eq!(v["type"], "authenticated", "{case}: {v}");
            assert_eq!(subscribe_news(&mut c), Ok(()), "{case}");
        } else {
            assert_eq!(close_code(&mut c, DEADLINE), Some(4001), "{case}");
        }
    }
    // No token at all: the connection opens, every command but auth is unauthorized.
    let mut c = nodes.hs.client();
    assert_eq!(subscribe_news(&mut c).unwrap_err(), "unauthorized");
    c.send(r#"{"type":"publish","channel":"room:1","data":1,"id":3}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["id"].as_i64()),
        (Some("unauthorized"), Some(3))
    );
    c.send(r#"{"type":"unsubscribe","channel":"news"}"#);
    assert_eq!(c.expect_json()["code"], "unauthorized");
    c.send(r#"{"type":"presence","user":"alice"}"#);
    assert_eq!(c.expect_json()["code"], "unauthorized");
    // ...until it authenticates.
    c.send(&auth_msg(&hs(secret, &claims("alice", 60))));
    assert_eq!(c.expect_json()["type"], "authenticated");
    assert_eq!(subscribe_news(&mut c), Ok(()));
}

#[test]
fn the_bearer_header_authenticates_the_upgrade() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let token = hs(SECRET.as_bytes(), &claims("bob", 60));
    let bearer = format!("Bearer {token}");
    let mut c = ws_with_headers(&node.url(), &[("Authorization", &bearer)]).unwrap();
    assert_eq!(c.expect_json()["sub"], "bob");
    assert_eq!(subscribe_news(&mut c), Ok(()));
    let bad = format!("Bearer {}", hs(b"nope", &claims("bob", 60)));
    let e = ws_with_headers(&node.url(), &[("Authorization", &bad)])
        .err()
        .expect("refused");
    assert_eq!(refused_status(&e), 401);
}

#[test]
fn channel_patterns_allow_deny_and_prefix() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut c = node.client();
    c.send(&auth_msg(&hs(SECRET.as_bytes(), &claims("carol", 60))));
    assert_eq!(c.expect_json()["type"], "authenticated");
    c.subscribe("news");
    c.send(r#"{"type":"subscribe","channel":"secret"}"#);
    assert_eq!(
        c.expect_json(),
        json!({"type":"error","code":"forbidden","message":"the token does not allow this channel","channel":"secret"})
    );
    c.send(r#"{"type":"subscribe","channel":"newsroom"}"#);
    assert_eq!(
        c.expect_json()["code"],
        "forbidden",
        "exact names are exact"
    );
    // Still usable; the prefix pattern.
    c.subscribe("room:7");
    c.subscribe("room:1");
    c.send(r#"{"type":"publish","channel":"room:1","data":"hi","id":1}"#);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(c.expect_json());
    }
    assert!(got.contains(&json!({"type":"published","id":1})), "{got:?}");
    assert!(
        got.contains(&json!({"channel":"room:1","data":"hi"})),
        "{got:?}"
    );
    c.send(r#"{"type":"publish","channel":"room:7","data":"hi","id":2}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["channel"].as_str(), v["id"].as_i64()),
        (Some("forbidden"), Some("room:7"), Some(2)),
        "subscribe pattern is not a publish pattern: {v}"
    );
    c.send(r#"{"type":"unsubscribe","channel":"news"}"#);
    assert_eq!(c.expect_json()["type"], "unsubscribed");
}

#[test]
fn a_refresh_before_exp_keeps_the_connection_and_exp_closes_4003() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let secret = SECRET.as_bytes();
    // Expires without a refresh: closed with 4003 at exp (the tick is once a second).
    let mut lapsing = node.client();
    lapsing.send(&auth_msg(&hs(secret, &claims("dave", 2))));
    let exp = lapsing.expect_json()["exp"].as_u64().unwrap();
    let mut refreshed = node.client();
    refreshed.send(&auth_msg(&hs(secret, &claims("dave", 2))));
    assert_eq!(refreshed.expect_json()["type"], "authenticated");
    refreshed.send(&auth_msg(&hs(secret, &claims("dave", 60))));
    let v = refreshed.expect_json();
    assert_eq!(
        (v["type"].as_str(), v["sub"].as_str()),
        (Some("authenticated"), Some("dave"))
    );
    assert_eq!(
        close_code(&mut lapsing, Duration::from_secs(6)),
        Some(4003),
        "closed at exp"
    );
    assert!(
        now() >= exp && now() <= exp + 2,
        "closed on time: {} vs exp {exp}",
        now()
    );
    // The refreshed one outlives the first token.
    wait_for("the first exp to pass", DEADLINE, || {
        (now() > exp + 1).then_some(())
    });
    assert_eq!(subscribe_news(&mut refreshed), Ok(()));
    refreshed.subscribe("room:5");
    // A refresh that narrows the channels drops what it no longer allows.
    let mut narrower = claims("dave", 60);
    narrower["channels"] = json!(["room:*"]);
    refreshed.send(&auth_msg(&hs(secret, &narrower)));
    assert_eq!(refreshed.expect_json()["type"], "authenticated");
    assert_eq!(
        refreshed.expect_json(),
        json!({"type":"unsubscribed","channel":"news"})
    );
    assert_eq!(subscribe_news(&mut refreshed).unwrap_err(), "forbidden");
    refreshed.subscribe("room:5");
    // A token for another user closes with 4001.
    refreshed.send(&auth_msg(&hs(secret, &claims("eve", 60))));
    assert_eq!(close_code(&mut refreshed, DEADLINE), Some(4001));
}

#[test]
fn a_connection_not_authenticated_in_the_handshake_timeout_is_closed_4001() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--handshake-timeout", "2"]);
    let start = Instant::now();
    let mut c = node.client();
    assert_eq!(close_code(&mut c, Duration::from_secs(6)), Some(4001));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // One that authenticates in time stays.
    let mut ok = node.client();
    ok.send(&auth_msg(&hs(SECRET.as_bytes(), &claims("frank", 60))));
    assert_eq!(ok.expect_json()["type"], "authenticated");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(subscribe_news(&mut ok), Ok(()));
}

#[test]
fn presence_records_the_token_sub_not_the_user_parameter() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--presence-user-param"]);
    // grace may ask about anyone (see the next test for the default).
    let mut grace = claims("grace", 60);
    grace["presence"] = json!(true);
    let token = hs(SECRET.as_bytes(), &grace);
    let url = format!("{}?user=mallory&token={token}", node.url());
    let mut c = ws_with_headers(&url, &[]).unwrap();
    assert_eq!(c.expect_json()["type"], "authenticated");
    wait_for("grace online", DEADLINE, || {
        (support::ws_presence(&mut c, "grace")["online"] == true).then_some(())
    });
    assert_eq!(support::ws_presence(&mut c, "mallory")["online"], false);
    // Authenticated by message: recorded then.
    let mut m = node.client();
    m.send(&auth_msg(&hs(SECRET.as_bytes(), &claims("heidi", 60))));
    assert_eq!(m.expect_json()["type"], "authenticated");
    wait_for("heidi online", DEADLINE, || {
        (support::ws_presence(&mut c, "heidi")["online"] == true).then_some(())
    });
}

/// Without the `presence` claim a client may ask only about its own user.
#[test]
fn presence_queries_are_limited_to_the_own_user_without_the_presence_claim() {
    let node = TestNode::start(&["--jwt-secret", SECRET]);
    let mut c = node.client();
    c.send(&auth_msg(&hs(SECRET.as_bytes(), &claims("ivan", 60))));
    assert_eq!(c.expect_json()["type"], "authenticated");
    wait_for("ivan online", DEADLINE, || {
        (support::ws_presence(&mut c, "ivan")["online"] == true).then_some(())
    });
    c.send(r#"{"type":"presence","user":"judy"}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{v}"
    );
    // The connection stays usable.
    assert_eq!(support::ws_presence(&mut c, "ivan")["online"], true);
}

#[test]
fn with_auth_off_an_auth_message_is_a_bad_request_and_nothing_else_changes() {
    let node = TestNode::start(&[]);
    let mut c = node.client();
    c.subscribe("news");
    c.send(&auth_msg("x.y.z"));
    assert_eq!(c.expect_json()["code"], "bad_request");
    c.subscribe("anything");
}

#[test]
fn both_keys_or_a_bad_key_file_stop_the_node_at_startup() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap()
    };
    let both = run(&["--jwt-secret", "s", "--jwt-public-key", RSA_PUBLIC]);
    assert!(!both.status.success());
    let private_as_public = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/README.md");
    let bad = run(&["--jwt-public-key", private_as_public]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jwt-public-key"));
}

/// `--max-conns-per-user`: connections are counted per token `sub`; past the limit the
/// upgrade gets 429 (token on the URL) or the connection closes 1008 (auth message);
/// another user is not affected, and a closed connection frees its place.
#[test]
fn connections_per_user_are_capped() {
    let node = TestNode::start(&["--jwt-secret", SECRET, "--max-conns-per-user", "2"]);
    let token = |sub: &str| hs(SECRET.as_bytes(), &claims(sub, 60));
    let open = |sub: &str| ws_with_headers(&format!("{}?token={}", node.url(), token(sub)), &[]);
    let mut a = open("kim").unwrap();
    assert_eq!(a.expect_json()["type"], "authenticated");
    let mut b = open("kim").unwrap();
    assert_eq!(b.expect_json()["type"], "authenticated");
    let refused = open("kim").err().expect("a third for kim is refused");
    assert_eq!(refused_status(&refused), 429);
    let mut other = open("lee").unwrap();
    assert_eq!(other.expect_json()["type"], "authenticated");
    // By auth message: closed with 1008.
    let mut m = node.client();
    m.send(&auth_msg(&token("kim")));
    assert_eq!(close_code(&mut m, DEADLINE), Some(1008));
    // One of kim's closes: its place is free again.
    drop(b);
    let mut again = wait_for("a freed place for kim", DEADLINE, || open("kim").ok());
    assert_eq!(again.expect_json()["type"], "authenticated");
    a.subscribe("news");
}
