//! Sessions driven without a socket: bytes in, effects out.

use super::*;
use crate::auth::Grant;
use crate::config::Namespaces;
use crate::protocol::ErrorCode;
use crate::ws::frame::{self, OutOp};
use crate::ws::inbound::client_frame;

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn text(s: &str) -> Vec<u8> {
    client_frame(1, true, s.as_bytes(), [1, 2, 3, 4])
}

/// Feeds `bytes` and collects every effect (answering nothing in between).
fn feed(s: &mut Session, bytes: &[u8]) -> Vec<Effect> {
    let mut buf = bytes.to_vec();
    let mut at = 0;
    let mut out = Vec::new();
    while let Some(e) = s.poll(&mut buf, &mut at, &Limits::default(), true) {
        out.push(e);
    }
    assert_eq!(at, buf.len(), "every byte taken");
    out
}

fn open() -> Session {
    let mut s = Session::new(0);
    assert!(matches!(feed(&mut s, UPGRADE)[..], [Effect::Upgrade(_)]));
    s.open(false);
    s
}

#[test]
fn frames_behind_an_upgrade_wait_for_admission_then_decode() {
    let mut s = Session::new(0);
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(text(r#"{"type":"subscribe","channel":"a"}"#));
    let effects = feed(&mut s, &bytes);
    assert!(matches!(effects[..], [Effect::Upgrade(_)]), "{effects:?}");
    assert!(s.has_input());
    s.open(false);
    assert_eq!(
        feed(&mut s, b""),
        [Effect::Command(Cmd::Subscribe("a".into(), None))]
    );
}

#[test]
fn commands_split_anyhow_come_out_whole_and_in_order() {
    let mut bytes = text(r#"{"type":"publish","channel":"c","data":[1,2],"id":7}"#);
    bytes.extend(client_frame(9, true, b"hi", [5, 6, 7, 8]));
    bytes.extend(client_frame(10, true, b"", [5, 6, 7, 8]));
    bytes.extend(text(r#"{"type":"unsubscribe","channel":"c"}"#));
    for split in 1..bytes.len() {
        let mut s = open();
        let mut effects = feed(&mut s, &bytes[..split]);
        effects.extend(feed(&mut s, &bytes[split..]));
        assert_eq!(
            effects,
            [
                Effect::Command(Cmd::Publish {
                    channel: "c".into(),
                    payload: Bytes::from_static(b"[1,2]"),
                    id: Some("7".into()),
                }),
                Effect::Send(frame::build(OutOp::Pong, b"hi").freeze()),
                Effect::Command(Cmd::Unsubscribe("c".into())),
            ],
            "split at {split}"
        );
    }
}

#[test]
fn a_close_or_a_violation_ends_the_input() {
    let mut s = open();
    let mut bytes = client_frame(8, true, &1000u16.to_be_bytes(), [1, 1, 1, 1]);
    bytes.extend(text(r#"{"type":"subscribe","channel":"late"}"#));
    assert_eq!(
        feed(&mut s, &bytes),
        [Effect::Close {
            code: 1000,
            reason: ""
        }]
    );
    assert_eq!(s.phase(), Phase::Closing);
    assert_eq!(feed(&mut s, &text("{}")), []);
    let mut s = open();
    let effects = feed(&mut s, &[0x81, 0x02, b'h', b'i']);
    assert!(
        matches!(effects[..], [Effect::Close { code: 1002, .. }]),
        "unmasked: {effects:?}"
    );
    assert!(!s.close(), "already closing");
}

#[test]
fn bad_commands_become_error_replies_and_the_connection_stays() {
    let mut s = open();
    let effects = feed(&mut s, &text(r#"{"type":"nope"}"#));
    assert!(matches!(effects[..], [Effect::Error { text: true, .. }]));
    assert!(s.is_open());
}

#[test]
fn keep_alive_requests_are_parsed_one_at_a_time() {
    let mut s = Session::new(0);
    let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
    let effects = feed(&mut s, two);
    assert!(matches!(&effects[..], [Effect::Request(h, _)] if h.path == "/a"));
    assert_eq!(s.phase(), Phase::HttpWait, "waits for the answer");
    assert!(s.responded(true, 1));
    let effects = feed(&mut s, b"");
    assert!(matches!(&effects[..], [Effect::Request(h, _)] if h.path == "/b"));
    assert!(!s.responded(true, 1), "the request said close");
    assert_eq!(s.phase(), Phase::Closing);
}

#[test]
fn a_malformed_request_is_rejected_and_buffering_is_bounded() {
    let mut s = Session::new(0);
    let effects = feed(&mut s, b"\x16\x03garbage\r\n\r\n");
    assert!(matches!(effects[..], [Effect::Reject(_)]));
    assert_eq!(
        feed(&mut s, b"GET / HTTP/1.1\r\n\r\n"),
        [],
        "nothing more is parsed"
    );
    assert!(!s.responded(true, 1), "the answer closes the connection");
    assert_eq!(s.phase(), Phase::Closing);
    let mut s = Session::new(0);
    let effects = feed(&mut s, b"GET /a HTTP/1.1\r\n\r\n");
    assert!(matches!(effects[..], [Effect::Request(..)]));
    let limits = Limits::default();
    let big = vec![b'x'; limits.max_request_head + limits.max_request_body + 1];
    assert_eq!(feed(&mut s, &big), [Effect::Drop]);
}

fn grant(sub: &str, exp: u64) -> Grant {
    use crate::auth::Pattern;
    Grant {
        sub: sub.into(),
        exp,
        subscribe: vec![Pattern::parse("a"), Pattern::parse("p:*")],
        publish: vec![Pattern::parse("p:1")],
        presence: false,
    }
}

/// The namespaces of a node with auth on (or off) and this TOML config.
fn namespaces(auth: bool, toml: &str) -> Namespaces {
    use crate::config::{Args, Config};
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "fanout-session-ns-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, toml).unwrap();
    let args = Args {
        config: Some(path.clone()),
        jwt_secret: auth.then(|| "s".to_string()),
        ..Args::default()
    };
    let c = Config::resolve(args, None);
    let _ = std::fs::remove_file(path);
    c.unwrap().namespaces
}

fn publish(c: &str) -> Cmd {
    Cmd::Publish {
        channel: c.into(),
        payload: Bytes::from_static(b"1"),
        id: None,
    }
}

const T: Timers = Timers {
    handshake: 10,
    ping: 25,
};

#[test]
fn auth_off_permits_everything_and_never_closes_for_auth() {
    let s = open();
    let ns = Namespaces::default();
    assert_eq!(s.permits(&Cmd::Subscribe("x".into(), None), &ns), Ok(()));
    assert_eq!(s.permits(&publish("x"), &ns), Ok(()));
    assert_eq!(s.due(0, 5, T), Due::Nothing);
    // Without auth, only `publish = "none"` refuses anything.
    let ns = namespaces(
        false,
        "[[namespace]]\nprefix = \"ro:\"\npublish = \"none\"\n",
    );
    assert_eq!(s.permits(&publish("ro:1"), &ns), Err(ErrorCode::Forbidden));
    assert_eq!(s.permits(&Cmd::Subscribe("ro:1".into(), None), &ns), Ok(()));
    assert_eq!(s.permits(&publish("rw:1"), &ns), Ok(()));
}

#[test]
fn namespace_rules_decide_with_the_token() {
    let ns = namespaces(
        true,
        r#"
[[namespace]]
prefix = "pub:"
subscribe = "public"
publish = "public"

[[namespace]]
prefix = "ro:"
subscribe = "public"
publish = "none"

[[namespace]]
prefix = "user:"
subscribe = "user"

[[namespace]]
prefix = "p:x"
publish = "none"
"#,
    );
    let mut s = open();
    s.require_auth(3);
    assert_eq!(
        s.permits(&Cmd::Subscribe("pub:1".into(), None), &ns),
        Err(ErrorCode::Unauthorized),
        "public still needs a token"
    );
    s.authenticate(grant("u", 1005), 2, 1000);
    let sub = |c: &str| s.permits(&Cmd::Subscribe(c.into(), None), &ns);
    assert_eq!(sub("pub:1"), Ok(()), "public: no claim needed");
    assert_eq!(sub("a"), Ok(()), "token: the claim");
    assert_eq!(sub("b"), Err(ErrorCode::Forbidden));
    assert_eq!(sub("user:u"), Ok(()), "user: own channel");
    assert_eq!(sub("user:u:inbox"), Ok(()));
    assert_eq!(sub("user:v"), Err(ErrorCode::Forbidden), "another user's");
    assert_eq!(sub("user:uu"), Err(ErrorCode::Forbidden));
    let publ = |c: &str| s.permits(&publish(c), &ns);
    assert_eq!(publ("pub:1"), Ok(()), "public: no claim needed");
    assert_eq!(publ("ro:1"), Err(ErrorCode::Forbidden), "none");
    assert_eq!(publ("p:1"), Ok(()), "token: the claim");
    assert_eq!(publ("p:2"), Err(ErrorCode::Forbidden));
    assert_eq!(publ("user:u"), Err(ErrorCode::Forbidden), "inherits token");
    let g = grant("u", 1005);
    assert!(may_subscribe(&g, &ns, "p:xyz"), "the claim p:* matches");
    assert!(!may_publish(&g, &ns, "p:xyz"), "none beats the claim");
}

#[test]
fn auth_on_gates_commands_and_closes_4001_then_4003() {
    let ns = namespaces(true, "");
    let mut s = open();
    s.require_auth(3);
    assert_eq!(
        s.permits(&Cmd::Subscribe("a".into(), None), &ns),
        Err(ErrorCode::Unauthorized)
    );
    assert_eq!(s.permits(&Cmd::Auth("t".into()), &ns), Ok(()));
    assert_eq!(s.due(0, 2, T), Due::Nothing);
    assert_eq!(
        s.due(0, 3, T),
        Due::Close {
            code: 4001,
            reason: "unauthorized"
        }
    );
    // Authenticated at coarse 2 = Unix 1000; exp 1005: closes at coarse 7.
    assert_eq!(s.authenticate(grant("u", 1005), 2, 1000), Refresh::First);
    assert_eq!(s.grant().map(|g| &*g.sub), Some("u"));
    assert_eq!(s.due(0, 6, T), Due::Nothing);
    assert_eq!(
        s.due(0, 7, T),
        Due::Close {
            code: 4003,
            reason: "token expired"
        }
    );
    assert_eq!(s.permits(&Cmd::Subscribe("a".into(), None), &ns), Ok(()));
    assert_eq!(s.permits(&Cmd::Subscribe("p:9".into(), None), &ns), Ok(()));
    assert_eq!(
        s.permits(&Cmd::Subscribe("b".into(), None), &ns),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(s.permits(&publish("p:1"), &ns), Ok(()));
    assert_eq!(s.permits(&publish("p:2"), &ns), Err(ErrorCode::Forbidden));
    // A refresh moves the deadline; another user is refused and changes nothing.
    assert_eq!(s.authenticate(grant("u", 1100), 5, 1003), Refresh::Renewed);
    assert_eq!(s.due(0, 7, T), Due::Nothing);
    assert_eq!(
        s.authenticate(grant("v", 2000), 6, 1004),
        Refresh::OtherUser
    );
    assert_eq!(s.grant().map(|g| (&*g.sub, g.exp)), Some(("u", 1100)));
    assert_eq!(
        s.due(0, 102, T),
        Due::Close {
            code: 4003,
            reason: "token expired"
        }
    );
}

#[test]
fn the_deflate_byte_fits_in_what_was_padding() {
    // permessage-deflate adds one byte to a session, never a compressor or a window:
    // a Session stays 64 bytes (it was 64 before the byte).
    assert_eq!(std::mem::size_of::<Session>(), 64);
    let mut s = Session::new(0);
    assert_eq!(s.deflate(), 0);
    s.set_deflate(9);
    assert_eq!(s.deflate(), 9);
}
