//! Integration: the loadgen binary against a deliberately misbehaving protocol-v1 server
//! written here with tungstenite. By the publish's sequence number `s` (one publisher,
//! one channel, so `s` is the publish number) the server drops every 100th message,
//! delivers some twice, swaps two, refuses some with `unavailable`, and can delay its
//! publish acks (a stalled publisher). The tests assert the exact lost / duplicate /
//! reordered / refused counts loadgen reports in its JSON output, and that a stalled
//! fixed-rate publisher shows up in the latency from the intended send time.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

type Hub = Arc<Mutex<HashMap<String, Vec<Sender<String>>>>>;

/// What the server does wrong.
#[derive(Clone, Copy)]
struct Faults {
    /// Drop (ack but never deliver) s with (s + 1) % 100 == 0, deliver s % 100 == 50
    /// twice, deliver s % 100 == 20 after s % 100 == 21, and refuse s % 100 == 70 with
    /// an `unavailable` error frame.
    mangle: bool,
    /// Delay every publish ack by this long (the delivery itself is immediate).
    ack_delay_ms: u64,
}

fn deliver(hub: &Hub, ch: &str, frame: &str) {
    if let Some(subs) = hub.lock().expect("hub").get_mut(ch) {
        subs.retain(|s| s.send(frame.to_string()).is_ok());
    }
}

fn serve_conn(stream: TcpStream, hub: Hub, f: Faults) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(2)));
    let (tx, rx) = mpsc::channel::<String>();
    let mut held: Option<String> = None;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json from loadgen");
                let ch = v["channel"].as_str().unwrap_or("").to_string();
                match v["type"].as_str() {
                    Some("subscribe") => {
                        hub.lock()
                            .expect("hub")
                            .entry(ch.clone())
                            .or_default()
                            .push(tx.clone());
                        let _ = ws.write(Message::text(format!(
                            r#"{{"type":"subscribed","channel":"{ch}"}}"#
                        )));
                    }
                    Some("publish") => {
                        let s = v["data"]["s"].as_u64().expect("s");
                        let id = &v["id"];
                        let frame = format!(r#"{{"channel":"{ch}","data":{}}}"#, v["data"]);
                        let m = s % 100;
                        if f.mangle && m == 70 {
                            let _ = ws.write(Message::text(format!(
                                r#"{{"type":"error","code":"unavailable","message":"down","id":{id}}}"#
                            )));
                            continue;
                        }
                        if !f.mangle {
                            deliver(&hub, &ch, &frame);
                        } else if m == 99 {
                        } else if m == 20 {
                            held = Some(frame);
                        } else {
                            deliver(&hub, &ch, &frame);
                            if m == 50 {
                                deliver(&hub, &ch, &frame);
                            }
                            if m == 21 {
                                if let Some(h) = held.take() {
                                    deliver(&hub, &ch, &h);
                                }
                            }
                        }
                        if f.ack_delay_ms > 0 {
                            std::thread::sleep(Duration::from_millis(f.ack_delay_ms));
                        }
                        let _ = ws.write(Message::text(format!(
                            r#"{{"type":"published","id":{id}}}"#
                        )));
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        while let Ok(m) = rx.try_recv() {
            if ws.write(Message::text(m)).is_err() {
                return;
            }
        }
        if ws.flush().is_err() {
            return;
        }
    }
}

fn start_server(f: Faults) -> String {
    let hub: Hub = Arc::default();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let hub = hub.clone();
            std::thread::spawn(move || serve_conn(s, hub, f));
        }
    });
    format!("ws://{addr}/")
}

fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("one JSON line")).expect("JSON output")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// What one subscriber should see for publishes 0..n under `Faults::mangle`, counted
/// independently of loadgen's tracker: (refused, lost, duplicates, reordered).
fn model(n: u64) -> (u64, u64, u64, u64) {
    let mut arrivals = Vec::new();
    let mut held = None;
    let mut refused = 0;
    for s in 0..n {
        match s % 100 {
            70 => refused += 1,
            99 => {}
            20 => held = Some(s),
            50 => arrivals.extend([s, s]),
            21 => arrivals.extend([s].into_iter().chain(held.take())),
            _ => arrivals.push(s),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let (mut dups, mut reord, mut max) = (0, 0, None::<u64>);
    for &s in &arrivals {
        if !seen.insert(s) {
            dups += 1;
            continue;
        }
        if max.is_some_and(|m| s < m) {
            reord += 1;
        }
        max = max.max(Some(s));
    }
    let lost = n - refused - seen.len() as u64;
    (refused, lost, dups, reord)
}

#[test]
fn exact_lost_duplicate_reorder_and_refused_counts() {
    let url = start_server(Faults {
        mangle: true,
        ack_delay_ms: 0,
    });
    let subs = 3u64;
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--subs",
        "3",
        "--channels",
        "1",
        "--pubs",
        "1",
        "--rate",
        "2000",
        "--warmup",
        "0",
        "--duration",
        "0.6",
        "--drain",
        "1",
    ]);
    let n = u(&r, "published");
    assert_eq!(
        u(&r, "published_total"),
        n,
        "every publish is in the window"
    );
    assert!(n >= 300, "the publisher kept up: {n} publishes in {r}");
    let (refused, lost, dups, reord) = model(n);
    assert!(refused >= 3 && lost >= 3 && dups >= 3 && reord >= 2);
    assert_eq!(u(&r, "refused_unavailable"), refused, "{r}");
    assert_eq!(u(&r, "expected"), (n - refused) * subs, "{r}");
    assert_eq!(u(&r, "lost"), lost * subs, "{r}");
    assert_eq!(u(&r, "duplicates"), dups * subs, "{r}");
    assert_eq!(u(&r, "reordered"), reord * subs, "{r}");
    assert_eq!(u(&r, "delivered"), (n - refused - lost) * subs, "{r}");
}

#[test]
fn stalled_publisher_shows_in_latency_from_intended_send() {
    // Acks come 10 ms late and the window is 1, so the publisher sends ~100/s of the
    // 1,000/s asked for: each message waits behind the schedule, which only the
    // latency from the intended send time shows.
    let url = start_server(Faults {
        mangle: false,
        ack_delay_ms: 10,
    });
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "--subs",
        "2",
        "--channels",
        "1",
        "--pubs",
        "1",
        "--rate",
        "1000",
        "--window",
        "1",
        "--warmup",
        "0",
        "--duration",
        "0.5",
        "--drain",
        "1",
    ]);
    let intended = r["latency_us"]["p50"].as_f64().expect("p50");
    let actual = r["latency_from_actual_send_us"]["p50"]
        .as_f64()
        .expect("actual p50");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert!(
        intended > 50_000.0,
        "intended-send latency {intended} µs hides the stall: {r}"
    );
    assert!(actual < 10_000.0, "actual-send latency {actual} µs: {r}");
    assert_eq!(r["p50_us"], r["latency_us"]["p50"], "tables use intended");
}
