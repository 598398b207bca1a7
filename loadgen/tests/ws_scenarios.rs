//! Integration: the loadgen binary (fanout, conns, churn; threads and child processes)
//! against a minimal protocol-v1 pub/sub server written here with tungstenite. The
//! server also pings every subscriber and sends a `gap` frame, which loadgen must
//! answer / count without losing anything.

mod fake_ws;
mod run;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use run::loadgen;
use serde_json::Value;
use tungstenite::{Bytes, Message};

type Hub = Arc<Mutex<HashMap<String, Vec<Sender<String>>>>>;

fn serve_conn(stream: TcpStream, hub: Hub) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(2)));
    let (tx, rx) = mpsc::channel::<String>();
    while fake_ws::turn(&mut ws, &rx, |ws, t| {
        let Ok(v) = serde_json::from_str::<Value>(t) else {
            let _ = ws.write(Message::text(
                r#"{"type":"error","code":"bad_json","message":"bad json"}"#,
            ));
            return;
        };
        let ch = v["channel"].as_str().unwrap_or("").to_string();
        match v["type"].as_str() {
            Some("subscribe") => {
                hub.lock()
                    .expect("hub")
                    .entry(ch.clone())
                    .or_default()
                    .push(tx.clone());
                let _ = ws.write(Message::Ping(Bytes::from_static(b"hi")));
                let _ = ws.write(Message::text(format!(
                    r#"{{"type":"subscribed","channel":"{ch}"}}"#
                )));
                let _ = ws.write(Message::text(format!(
                    r#"{{"type":"gap","channel":"{ch}"}}"#
                )));
            }
            Some("publish") => {
                let frame = format!(r#"{{"channel":"{ch}","data":{}}}"#, v["data"]);
                if let Some(subs) = hub.lock().expect("hub").get_mut(&ch) {
                    subs.retain(|s| s.send(frame.clone()).is_ok());
                }
                if !v["id"].is_null() {
                    let _ = ws.write(Message::text(format!(
                        r#"{{"type":"published","id":{}}}"#,
                        v["id"]
                    )));
                }
            }
            _ => {
                let _ = ws.write(Message::text(
                    r#"{"type":"error","code":"unknown_type","message":"?"}"#,
                ));
            }
        }
    }) {}
    // Drain until the peer closes (bounded by the read timeout loop above ending).
}

/// Start the server on a free port; returns its ws:// URL.
fn start_server() -> String {
    start_nodes(1).0.remove(0)
}

/// Start `n` listeners ("nodes") that share one hub, like fanout nodes on one Redis: a
/// publish on any node reaches subscribers on every node. Returns their URLs and the
/// number of connections each node accepted.
fn start_nodes(n: usize) -> (Vec<String>, Vec<Arc<AtomicUsize>>) {
    let hub: Hub = Arc::default();
    let mut urls = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let (hub, accepted) = (hub.clone(), Arc::new(AtomicUsize::new(0)));
        counts.push(accepted.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                accepted.fetch_add(1, Ordering::Relaxed);
                let hub = hub.clone();
                std::thread::spawn(move || serve_conn(s, hub));
            }
        });
        urls.push(format!("ws://{addr}/"));
    }
    (urls, counts)
}

fn accepted(counts: &[Arc<AtomicUsize>]) -> Vec<usize> {
    counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn assert_clean_fanout(r: &Value, subs: u64) {
    assert_eq!(u(r, "subscribed"), subs);
    assert!(u(r, "published") > 0);
    assert!(u(r, "expected") > 0);
    assert_eq!(u(r, "delivered"), u(r, "expected"), "{r}");
    for k in [
        "lost",
        "duplicates",
        "reordered",
        "connect_errors",
        "subscribe_errors",
        "disconnects",
        "publish_errors",
        "unparsed_frames",
    ] {
        assert_eq!(u(r, k), 0, "{k} in {r}");
    }
    assert_eq!(u(r, "gap_frames"), subs, "one gap frame per subscription");
    assert!(r["p99_us"].as_f64().expect("p99") > 0.0);
    assert_eq!(r["latency_us"]["count"], r["delivered"]);
    let streams = r["streams"].as_array().expect("streams");
    assert!(streams.iter().all(|s| s["lost"] == 0));
}

#[test]
fn fanout_ws_single_process_with_plots() {
    let url = start_server();
    let dir = std::env::temp_dir();
    let svg = dir.join(format!("lg-test-{}.svg", std::process::id()));
    let png = dir.join(format!("lg-test-{}.png", std::process::id()));
    let me = std::process::id().to_string();
    let common = [
        "fanout",
        "--url",
        &url,
        "--subs",
        "20",
        "--channels",
        "3",
        "--pubs",
        "2",
        "--publish-via",
        "ws",
        "--rate",
        "1000",
        "--payload",
        "80",
        "--warmup",
        "0.2",
        "--duration",
        "0.6",
        "--drain",
        "2",
        "--threads",
        "2",
        "--server-pid",
        &me,
    ];
    let svg_s = svg.to_string_lossy().into_owned();
    let r = loadgen(&[&common[..], &["--plot", &svg_s]].concat());
    assert_clean_fanout(&r, 20);
    assert!(r["server_cpu_s"].as_f64().is_some());
    assert!(r["deliveries_per_server_cpu_sec"].is_number() || r["server_cpu_s"] == 0.0);
    let s = std::fs::read_to_string(&svg).expect("svg written");
    assert!(s.starts_with("<svg") && s.contains("<polyline"));
    let png_s = png.to_string_lossy().into_owned();
    let r = loadgen(
        &[
            &common[..],
            &["--plot", &png_s, "--rate", "0", "--window", "8"],
        ]
        .concat(),
    );
    assert_clean_fanout(&r, 20);
    if let Ok(b) = std::fs::read(&png) {
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    }
    let _ = std::fs::remove_file(svg);
    let _ = std::fs::remove_file(png);
}

#[test]
fn fanout_ws_child_processes() {
    // Two nodes sharing a hub: subscribers round robin over both, publisher k on node
    // k % 2, so every delivery to half the subscribers crosses nodes.
    let (urls, counts) = start_nodes(2);
    let url = urls.join(",");
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--subs",
        "12",
        "--channels",
        "4",
        "--subs-per-conn",
        "2",
        "--pubs",
        "5",
        "--rate",
        "500",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--procs",
        "2",
        "--source-addrs",
        "3",
    ]);
    assert_eq!(u(&r, "procs"), 2);
    // 12 conns × 2 subscriptions each: 24 gap frames.
    assert_eq!(u(&r, "gap_frames"), 24);
    assert_eq!(u(&r, "delivered"), u(&r, "expected"), "{r}");
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(r["streams"].as_array().map(Vec::len), Some(5));
    assert_eq!(r["per_url_conns"], serde_json::json!([6, 6]), "{r}");
    assert_eq!(r["per_url_pubs"], serde_json::json!([3, 2]), "{r}");
    assert_eq!(r["urls"].as_array().map(Vec::len), Some(2));
    // Node 0: 6 subscribers + publishers 0, 2, 4; node 1: 6 + publishers 1, 3.
    assert_eq!(accepted(&counts), vec![9, 8]);
}

#[test]
fn conns_and_churn() {
    let url = start_server();
    let me = std::process::id().to_string();
    // Repeated --url: 40 connections over three nodes.
    let (urls, counts) = start_nodes(3);
    let r = loadgen(&[
        "conns",
        "--url",
        &urls[0],
        "--url",
        &urls[1],
        "--url",
        &urls[2],
        "--conns",
        "40",
        "--channels",
        "7",
        "--hold",
        "0.2",
        "--procs",
        "2",
    ]);
    assert_eq!(u(&r, "subscribed"), 40, "{r}");
    assert_eq!(r["per_url_conns"], serde_json::json!([14, 13, 13]), "{r}");
    assert_eq!(accepted(&counts), vec![14, 13, 13]);
    let r = loadgen(&[
        "churn",
        "--url",
        &urls[1],
        "--url",
        &urls[2],
        "--rate",
        "0",
        "--conns",
        "30",
        "--duration",
        "5",
        "--concurrency",
        "6",
    ]);
    assert_eq!(u(&r, "completed"), 30, "{r}");
    assert_eq!(r["per_url_conns"], serde_json::json!([15, 15]), "{r}");
    assert_eq!(accepted(&counts), vec![14, 28, 28]);

    let r = loadgen(&[
        "conns",
        "--url",
        &url,
        "--conns",
        "40",
        "--channels",
        "7",
        "--hold",
        "0.3",
        "--server-pid",
        &me,
        "--procs",
        "2",
    ]);
    assert_eq!(u(&r, "subscribed"), 40);
    assert_eq!(u(&r, "disconnects"), 0);
    assert_eq!(u(&r, "connect_errors"), 0);
    assert!(r["kib_per_conn"].is_number(), "{r}");
    assert!(r["connects_per_sec"].as_f64().expect("rate") > 0.0);
    assert_eq!(r["subscribe_latency_us"]["count"], 40);

    let r = loadgen(&[
        "churn",
        "--url",
        &url,
        "--rate",
        "300",
        "--duration",
        "0.5",
        "--concurrency",
        "20",
        "--channels",
        "3",
        "--hold-ms",
        "5",
        "--threads",
        "2",
    ]);
    assert!(u(&r, "completed") > 50, "{r}");
    assert_eq!(u(&r, "completed"), u(&r, "started"), "{r}");
    assert_eq!(u(&r, "errors"), 0, "{r}");
    assert_eq!(r["subscribe_latency_us"]["count"], r["completed"]);

    let r = loadgen(&[
        "churn",
        "--url",
        &url,
        "--rate",
        "0",
        "--conns",
        "60",
        "--duration",
        "5",
        "--concurrency",
        "10",
        "--close",
        "abort",
    ]);
    assert_eq!(u(&r, "completed"), 60, "{r}");
    assert_eq!(u(&r, "errors"), 0);
}

#[test]
fn refused_server_is_an_error_not_a_hang() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "fanout",
            "--url",
            &url,
            "--subs",
            "3",
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--quiet",
            "--setup-timeout",
            "5",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
    let r = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "conns",
            "--url",
            &url,
            "--conns",
            "5",
            "--hold",
            "0",
            "--json",
            "--quiet",
            "--setup-timeout",
            "5",
        ])
        .output()
        .expect("run");
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&r.stdout).trim()).expect("json");
    assert_eq!(v["connect_errors"], 5);
    assert_eq!(v["subscribed"], 0);
}
