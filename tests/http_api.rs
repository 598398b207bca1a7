//! HTTP on the WebSocket port: the publish API with and without a key, malformed
//! requests answered with the right 4xx (never a hang), origin checks at the handshake,
//! and metrics that move as traffic flows.

mod common;
mod support;

use std::process::Command;

use common::{wait_for, RedisProcess, TestNode, DEADLINE};
use serde_json::json;
use support::{get, metric, post, raw, refused_status, ws_with_headers};

#[test]
fn publish_api_delivers_verbatim_one_message_or_a_batch_in_order() {
    let node = TestNode::start(&[]);
    let mut sub = node.client();
    sub.subscribe("news");
    let r = post(
        node.addr,
        "/api/publish",
        r#"{"channel":"news","data":{"a": 1.50}}"#,
        "",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json(), json!({"published":1}));
    match sub.recv_message(DEADLINE) {
        Some(tungstenite::Message::Text(t)) => {
            assert_eq!(t.as_str(), r#"{"channel":"news","data":{"a": 1.50}}"#)
        }
        other => panic!("{other:?}"),
    }
    let batch = r#"[{"channel":"news","data":1},{"channel":"other","data":0},{"channel":"news","data":2},{"channel":"news","data":"three"}]"#;
    let r = post(node.addr, "/api/publish", batch, "");
    assert_eq!((r.status, r.json()), (202, json!({"published":4})));
    for want in [json!(1), json!(2), json!("three")] {
        assert_eq!(sub.expect_json(), json!({"channel":"news","data":want}));
    }
}

#[test]
fn publish_api_crosses_nodes_in_cluster_mode() {
    let redis = RedisProcess::start();
    let a = TestNode::with_redis(&redis, &[]);
    let b = TestNode::with_redis(&redis, &[]);
    // Healthy = both Redis links up and the pub/sub probe back, so no resubscribe
    // (and `gap`) can follow.
    for n in [&a, &b] {
        wait_for("nodes healthy", DEADLINE, || {
            (get(n.addr, "/healthz").status == 200).then_some(())
        });
    }
    let mut sub = b.client();
    sub.subscribe("room");
    let r = post(
        a.addr,
        "/api/publish",
        r#"{"channel":"room","data":"hi"}"#,
        "",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(sub.expect_json(), json!({"channel":"room","data":"hi"}));
}

#[test]
fn api_key_is_required_when_configured_by_flag_or_env() {
    let node = TestNode::start(&["--api-key", "sekret"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("API_KEY", "from-env");
    let env_node = TestNode::spawn(cmd);
    let body = r#"{"channel":"c","data":1}"#;
    for (headers, status) in [
        ("", 401),
        ("X-Api-Key: wrong\r\n", 401),
        ("Authorization: Bearer sekre\r\n", 401),
        ("Authorization: Basic sekret\r\n", 401),
        ("Authorization: Bearer sekret\r\n", 202),
        ("X-Api-Key: sekret\r\n", 202),
    ] {
        let r = post(node.addr, "/api/publish", body, headers);
        assert_eq!(r.status, status, "{headers:?}: {r:?}");
        if status == 401 {
            assert_eq!(r.header("WWW-Authenticate").as_deref(), Some("Bearer"));
        }
    }
    assert_eq!(get(node.addr, "/api/users/u/connections").status, 401);
    assert_eq!(post(env_node.addr, "/api/publish", body, "").status, 401);
    let r = post(
        env_node.addr,
        "/api/publish",
        body,
        "X-Api-Key: from-env\r\n",
    );
    assert_eq!(r.status, 202);
    // Health and metrics stay open for load balancers and scrapers.
    assert_eq!(get(node.addr, "/healthz").status, 200);
    assert_eq!(get(node.addr, "/metrics").status, 200);
}

#[test]
fn malformed_http_gets_a_4xx_answer_and_never_a_hang() {
    let node = TestNode::start(&["--max-message", "1024"]);
    let a = node.addr;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("bad json", post_bytes("/api/publish", "{nope", ""), 400),
        ("json scalar", post_bytes("/api/publish", "42", ""), 400),
        (
            "no data",
            post_bytes("/api/publish", r#"{"channel":"c"}"#, ""),
            400,
        ),
        (
            "bad channel",
            post_bytes("/api/publish", r#"{"channel":"","data":1}"#, ""),
            400,
        ),
        ("empty batch", post_bytes("/api/publish", "[]", ""), 400),
        (
            "data too large",
            post_bytes(
                "/api/publish",
                &format!(r#"{{"channel":"c","data":"{}"}}"#, "x".repeat(2000)),
                "",
            ),
            413,
        ),
        (
            "GET publish",
            b"GET /api/publish HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            "POST users",
            post_bytes("/api/users/u/connections", "", ""),
            405,
        ),
        (
            "no length",
            b"POST /api/publish HTTP/1.1\r\nConnection: close\r\nHost: t\r\n\r\n".to_vec(),
            411,
        ),
        (
            "body too large",
            b"POST /api/publish HTTP/1.1\r\nConnection: close\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
            413,
        ),
        (
            "bad length",
            b"POST /api/publish HTTP/1.1\r\nConnection: close\r\nContent-Length: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "chunked",
            b"POST /api/publish HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "head too large",
            format!("GET / HTTP/1.1\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            431,
        ),
        (
            "unknown api",
            b"GET /api/nothing HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            404,
        ),
        (
            "bad user escape",
            b"GET /api/users/%zz/connections HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        ("POST metrics", post_bytes("/metrics", "", ""), 405),
        ("unknown path", post_bytes("/x", "", ""), 404),
    ];
    for (what, bytes, status) in cases {
        let r = raw(a, &bytes);
        assert_eq!(r.status, status, "{what}: {r:?}");
    }
    let r = raw(a, b"GET /api/publish HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("Allow").as_deref(), Some("POST"));
    // The node is still fine.
    let mut c = node.client();
    c.subscribe("still-alive");
}

fn post_bytes(path: &str, body: &str, headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nConnection: close\r\nHost: t\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn origins_outside_the_allowed_list_get_403() {
    let node = TestNode::start(&[
        "--allowed-origins",
        "https://good.example, https://also.example/",
    ]);
    let url = node.url();
    let e = ws_with_headers(&url, &[("Origin", "https://evil.example")]).err();
    assert_eq!(refused_status(&e.expect("refused")), 403);
    let mut ok = ws_with_headers(&url, &[("Origin", "https://GOOD.example")]).expect("allowed");
    ok.subscribe("a");
    let mut ok = ws_with_headers(&url, &[("Origin", "https://also.example")]).expect("allowed");
    ok.subscribe("a");
    // Non-browser clients send no Origin.
    node.client().subscribe("a");
    assert_eq!(metric(node.addr, "fanout_upgrades_refused_total"), 1.0);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("ALLOWED_ORIGINS", "https://env.example");
    let env_node = TestNode::spawn(cmd);
    let e = ws_with_headers(&env_node.url(), &[("Origin", "https://good.example")]).err();
    assert_eq!(refused_status(&e.expect("refused")), 403);
    ws_with_headers(&env_node.url(), &[("Origin", "https://env.example")]).expect("allowed");
    // Without a list any origin is accepted.
    let open = TestNode::start(&[]);
    ws_with_headers(&open.url(), &[("Origin", "https://evil.example")]).expect("allowed");
}

#[test]
fn metrics_move_as_traffic_flows() {
    let redis = RedisProcess::start();
    let node = TestNode::with_redis(&redis, &["--shards", "2", "--presence-user-param"]);
    let a = node.addr;
    let before_out = metric(a, "fanout_messages_out_total");
    let before_latency = metric(a, "fanout_publish_to_send_seconds_count");
    let mut subs: Vec<_> = (0..4)
        .map(|i| common::WsClient::connect(&format!("ws://{a}/?user=m{i}")))
        .collect();
    for s in subs.iter_mut() {
        s.subscribe("metrics");
    }
    // The gauge counts every TCP connection, the scrape's own included.
    assert_eq!(metric(a, "fanout_connections"), 5.0);
    assert_eq!(metric(a, "fanout_subscriptions"), 4.0);
    wait_for("presence to record 4 connections", DEADLINE, || {
        (metric(a, "fanout_presence_connections") == 4.0).then_some(())
    });
    let mut publisher = node.client();
    for i in 0..50 {
        publisher.publish("metrics", &i.to_string());
    }
    for s in subs.iter_mut() {
        for i in 0..50 {
            assert_eq!(s.expect_json()["data"], i);
        }
    }
    assert_eq!(metric(a, "fanout_messages_out_total") - before_out, 200.0);
    assert!(metric(a, "fanout_publishes_total") >= 50.0);
    assert!(metric(a, "fanout_publish_to_send_seconds_count") - before_latency >= 50.0);
    let r = get(a, "/metrics");
    assert!(r
        .body
        .contains("# TYPE fanout_publish_to_send_seconds histogram"));
    assert!(r
        .body
        .contains("fanout_publish_to_send_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
    assert!(metric(a, "fanout_bytes_out_total") > 0.0);
    let queries = metric(a, "fanout_presence_queries_total");
    let v = support::ws_presence(&mut subs[0], "m1");
    assert_eq!(v["online"], true);
    assert_eq!(metric(a, "fanout_presence_queries_total"), queries + 1.0);
    assert!(metric(a, "fanout_presence_redis_rounds_total") > 0.0);
    drop(subs);
    wait_for("connections gauge to drop", DEADLINE, || {
        (metric(a, "fanout_connections") == 2.0).then_some(())
    });
    wait_for("presence gauge to drop", DEADLINE, || {
        (metric(a, "fanout_presence_connections") == 1.0).then_some(())
    });
}

#[test]
fn the_user_parameter_is_form_decoded_and_bad_encodings_get_a_clear_400() {
    let node = TestNode::start(&["--presence-user-param"]);
    // `+` is a space (as browsers encode forms), `%XX` are UTF-8 bytes.
    let _john = common::WsClient::connect(&format!("ws://{}/?user=John+Doe", node.addr));
    let _eve = common::WsClient::connect(&format!("ws://{}/?x=1&user=%C3%89ve%2B1", node.addr));
    for (path, user) in [
        ("/api/users/John%20Doe/connections", "John Doe"),
        ("/api/users/%C3%89ve+1/connections", "Éve+1"),
    ] {
        // Presence records the connection asynchronously: wait for it.
        let v = wait_for(&format!("{user} online"), DEADLINE, || {
            let r = get(node.addr, path);
            assert_eq!(r.status, 200, "{r:?}");
            let v = r.json();
            assert_eq!(v["user"].as_str(), Some(user), "{v}");
            (v["online"] == true).then_some(v)
        });
        assert_eq!(v["connections"].as_array().map(Vec::len), Some(1), "{v}");
    }
    for (query, reason) in [("user=%FF", "UTF-8"), ("user=a%2", "percent-encoding")] {
        let r = raw(
            node.addr,
            format!("GET /?{query} HTTP/1.1\r\nHost: t\r\n{UPGRADE_HEADERS}\r\n").as_bytes(),
        );
        assert_eq!(r.status, 400, "{query}: {r:?}");
        // Upgrade refusals carry a plain-text reason.
        assert!(r.body.contains(reason), "{query}: {r:?}");
    }
}

/// The headers of a WebSocket upgrade request (after the request line and Host).
const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
