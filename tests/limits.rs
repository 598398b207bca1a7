//! Limits against abuse: WebSocket connections per client address (429 past it, freed
//! when one closes) and the per-connection publish rate (`rate_limited`, counted, the
//! connection kept).

mod common;
mod support;

use std::time::Duration;

use common::{wait_for, TestNode, DEADLINE};
use support::{metric, refused_status, ws_with_headers};

#[test]
fn connections_per_address_are_capped_and_freed_on_close() {
    let node = TestNode::start(&["--max-conns-per-ip", "3"]);
    let url = node.url();
    let mut open: Vec<_> = (0..3).map(|_| node.client()).collect();
    for c in open.iter_mut() {
        c.subscribe("x");
    }
    let refused = ws_with_headers(&url, &[])
        .err()
        .expect("the fourth is refused");
    assert_eq!(refused_status(&refused), 429);
    assert_eq!(metric(node.addr, "fanout_upgrades_refused_total"), 1.0);
    // Plain HTTP is not a WebSocket connection: still answered.
    assert_eq!(support::get(node.addr, "/healthz").status, 200);
    // One closes: its place is free again (the count follows the close).
    drop(open.pop());
    let mut again = wait_for("a freed place", DEADLINE, || {
        ws_with_headers(&url, &[]).ok()
    });
    again.subscribe("x");
    assert!(ws_with_headers(&url, &[]).is_err(), "back at the limit");
}

#[test]
fn publishes_past_the_rate_get_rate_limited_and_the_connection_stays() {
    let node = TestNode::start(&["--publish-rate", "5"]);
    let mut c = node.client();
    for i in 0..20 {
        c.send(&format!(
            r#"{{"type":"publish","channel":"r","data":{i},"id":{i}}}"#
        ));
    }
    let (mut published, mut limited) = (0, 0);
    for _ in 0..20 {
        let v = c.expect_json();
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("published"), _) => published += 1,
            (Some("error"), Some("rate_limited")) => {
                assert_eq!(v["channel"], "r");
                assert!(v["id"].is_number(), "the id is echoed: {v}");
                limited += 1
            }
            other => panic!("unexpected {other:?}: {v}"),
        }
    }
    // A burst of 5, plus what refilled while the 20 were read (well under a second).
    assert!((5..=9).contains(&published), "{published} published");
    assert_eq!(published + limited, 20);
    assert_eq!(
        metric(node.addr, "fanout_publish_rate_limited_total"),
        limited as f64
    );
    // The bucket refills: a second later publishing works again.
    std::thread::sleep(Duration::from_millis(1100));
    c.send(r#"{"type":"publish","channel":"r","data":0,"id":"later"}"#);
    assert_eq!(c.expect_json()["type"], "published");
}

#[test]
fn out_of_range_limits_are_refused_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--listen", "127.0.0.1:0", "--publish-rate", "2000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--publish-rate must be between 0 and 1000000"),
        "{err}"
    );
}

/// `--client-publish off`: WebSocket publishes are refused (`forbidden`), the HTTP API
/// still publishes, and subscribers get its messages.
#[test]
fn client_publish_off_leaves_only_the_http_api() {
    let node = TestNode::start(&["--client-publish", "off"]);
    let mut sub = node.client();
    sub.subscribe("news");
    let mut c = node.client();
    c.send(r#"{"type":"publish","channel":"news","data":1,"id":"a"}"#);
    let v = c.expect_json();
    assert_eq!(
        (v["code"].as_str(), v["id"].as_str(), v["channel"].as_str()),
        (Some("forbidden"), Some("a"), Some("news")),
        "{v}"
    );
    let r = support::post(
        node.addr,
        "/api/publish",
        r#"{"channel":"news","data":2}"#,
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        sub.expect_json()["data"],
        2,
        "only the HTTP publish arrives"
    );
}
