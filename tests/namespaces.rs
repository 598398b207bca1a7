//! Channel namespaces on real nodes: the `[[namespace]]` tables' `subscribe` rules
//! (`public`, `token`, `user`) and `publish` rules (`none`, `token`, `public`) with auth
//! on, denials answered `forbidden` on a connection that stays usable, the longest
//! prefix winning, and with auth off only `publish = "none"` changing anything.
//! Tokens are minted with the `jsonwebtoken` crate.

mod common;
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{ConfigFile, TestNode, WsClient};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "namespace-test-secret";

const CONFIG: &str = r#"
[[namespace]]
prefix = "lobby:"
subscribe = "public"
publish = "public"

[[namespace]]
prefix = "feed:"
subscribe = "public"
publish = "none"

[[namespace]]
prefix = "user:"
subscribe = "user"
publish = "token"

[[namespace]]
prefix = "lobby:quiet:"
subscribe = "token"
publish = "none"
"#;

/// A TOML file holding `text`, removed on drop.
fn token(sub: &str, channels: &[&str], publish: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = json!({"sub": sub, "exp": exp, "channels": channels, "publish": publish});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A connection authenticated with `token` (auth message).
fn login(node: &TestNode, token: &str) -> WsClient {
    let mut c = node.client();
    c.send(&json!({"type":"auth","token":token}).to_string());
    assert_eq!(c.expect_json()["type"], "authenticated");
    c
}

/// The answer to a subscribe: Ok on `subscribed`, else the error code.
fn try_subscribe(c: &mut WsClient, channel: &str) -> Result<(), String> {
    c.send(&json!({"type":"subscribe","channel":channel}).to_string());
    answer(c.expect_json(), "subscribed", channel)
}

/// The answer to a publish with an id: Ok on `published`, else the error code.
fn try_publish(c: &mut WsClient, channel: &str) -> Result<(), String> {
    c.send(&json!({"type":"publish","channel":channel,"data":"x","id":7}).to_string());
    // A publish to a channel the client is subscribed to may be delivered before the ack.
    loop {
        let v = c.expect_json();
        if v.get("type").is_some() {
            return answer(v, "published", channel);
        }
    }
}

fn answer(v: Value, ok: &str, channel: &str) -> Result<(), String> {
    if v["type"] == ok {
        return Ok(());
    }
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["channel"], channel, "the error names the channel: {v}");
    Err(v["code"].as_str().unwrap_or("?").to_string())
}

fn forbidden() -> Result<(), String> {
    Err("forbidden".into())
}

#[test]
fn subscribe_rules_public_token_and_user() {
    let cfg = ConfigFile::new("sub", CONFIG);
    let node = TestNode::start(&["--jwt-secret", SECRET, "--config", cfg.path()]);
    // No `channels` claim at all.
    let mut amy = login(&node, &token("amy", &[], &[]));
    assert_eq!(try_subscribe(&mut amy, "lobby:main"), Ok(()), "public");
    assert_eq!(try_subscribe(&mut amy, "feed:prices"), Ok(()), "public");
    assert_eq!(
        try_subscribe(&mut amy, "news"),
        forbidden(),
        "token (the default) without the claim"
    );
    assert_eq!(
        try_subscribe(&mut amy, "lobby:quiet:1"),
        forbidden(),
        "the longest prefix wins: token"
    );
    assert_eq!(try_subscribe(&mut amy, "user:amy"), Ok(()), "own channel");
    assert_eq!(try_subscribe(&mut amy, "user:amy:inbox"), Ok(()));
    assert_eq!(try_subscribe(&mut amy, "user:bob"), forbidden(), "bob's");
    assert_eq!(try_subscribe(&mut amy, "user:amyx"), forbidden());
    // A claim does not open another user's channel in a `user` namespace.
    let mut eve = login(&node, &token("eve", &["user:*", "news"], &[]));
    assert_eq!(try_subscribe(&mut eve, "user:amy"), forbidden());
    assert_eq!(try_subscribe(&mut eve, "news"), Ok(()), "token: the claim");
    // A refresh keeps what the namespaces allow (only `token` channels are rechecked
    // against the new claims).
    amy.send(&json!({"type":"auth","token":token("amy", &[], &[])}).to_string());
    assert_eq!(amy.expect_json()["type"], "authenticated");
    // Still usable after the denials: amy gets what is published to her channels.
    let mut backend = login(&node, &token("svc", &[], &["user:*"]));
    assert_eq!(try_publish(&mut backend, "user:amy"), Ok(()));
    assert_eq!(
        amy.expect_json(),
        json!({"channel":"user:amy","data":"x"}),
        "delivered after denials and a refresh"
    );
    assert_eq!(try_publish(&mut backend, "lobby:main"), Ok(()));
    assert_eq!(
        amy.expect_json(),
        json!({"channel":"lobby:main","data":"x"})
    );
}

#[test]
fn publish_rules_none_token_and_public() {
    let cfg = ConfigFile::new("pub", CONFIG);
    let node = TestNode::start(&[
        "--jwt-secret",
        SECRET,
        "--config",
        cfg.path(),
        "--api-key",
        "k",
    ]);
    let mut ann = login(&node, &token("ann", &["*"], &["user:ann", "feed:*"]));
    assert_eq!(try_publish(&mut ann, "lobby:main"), Ok(()), "public");
    assert_eq!(
        try_publish(&mut ann, "feed:prices"),
        forbidden(),
        "none, even with the claim"
    );
    assert_eq!(try_publish(&mut ann, "lobby:quiet:1"), forbidden(), "none");
    assert_eq!(
        try_publish(&mut ann, "user:ann"),
        Ok(()),
        "token: the claim"
    );
    assert_eq!(try_publish(&mut ann, "user:bob"), forbidden(), "no claim");
    assert_eq!(try_publish(&mut ann, "news"), forbidden(), "default token");
    // The connection still works, and the HTTP API may publish where clients may not.
    assert_eq!(try_subscribe(&mut ann, "feed:prices"), Ok(()));
    let r = support::post(
        node.addr,
        "/api/publish",
        r#"{"channel":"feed:prices","data":42}"#,
        "Authorization: Bearer k\r\n",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(
        ann.expect_json(),
        json!({"channel":"feed:prices","data":42})
    );
}

#[test]
fn with_auth_off_only_publish_none_applies() {
    let cfg = ConfigFile::new(
        "noauth",
        "[[namespace]]\nprefix = \"feed:\"\nsubscribe = \"public\"\npublish = \"none\"\n",
    );
    let node = TestNode::start(&["--config", cfg.path()]);
    let mut c = node.client();
    c.subscribe("feed:a");
    c.subscribe("chat");
    assert_eq!(try_publish(&mut c, "feed:a"), forbidden());
    c.publish("chat", "1");
    assert_eq!(c.expect_json(), json!({"channel":"chat","data":1}));
    // A rule that needs a token is refused at startup without auth.
    let bad = ConfigFile::new(
        "noauth-bad",
        "[[namespace]]\nprefix = \"u:\"\nsubscribe = \"user\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--listen", "127.0.0.1:0", "--config", bad.path()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs auth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
