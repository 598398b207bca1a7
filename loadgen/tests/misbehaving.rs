//! Integration: the loadgen binary against a deliberately misbehaving protocol-v1 server
//! written here with tungstenite. By the publish's sequence number `s` (one publisher,
//! one channel, so `s` is the publish number) the server drops every 100th message,
//! delivers some twice, swaps two, refuses some with `unavailable`, and can delay its
//! publish acks (a stalled publisher). The tests assert the exact lost / duplicate /
//! reordered / refused counts loadgen reports in its JSON output, and that a stalled
//! fixed-rate publisher shows up in the latency from the intended send time.

mod fake_ws;
mod run;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use run::loadgen;
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
    /// Deliver s % 100 == 10 twice and s % 100 == 30 300 ms late.
    late_dup: bool,
    /// Deliver every message this late (in order).
    delay_all_ms: u64,
}

const CLEAN: Faults = Faults {
    mangle: false,
    ack_delay_ms: 0,
    late_dup: false,
    delay_all_ms: 0,
};

fn deliver(hub: &Hub, ch: &str, frame: &str) {
    if let Some(subs) = hub.lock().expect("hub").get_mut(ch) {
        subs.retain(|s| s.send(frame.to_string()).is_ok());
    }
}

fn serve_conn(stream: TcpStream, hub: Hub, f: Faults, delayed: Sender<(Instant, String, String)>) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(2)));
    let (tx, rx) = mpsc::channel::<String>();
    let mut held: Option<String> = None;
    while fake_ws::turn(&mut ws, &rx, |ws, t| {
        let v: Value = serde_json::from_str(t).expect("json from loadgen");
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
                    return;
                }
                if f.delay_all_ms > 0 {
                    let due = Instant::now() + Duration::from_millis(f.delay_all_ms);
                    let _ = delayed.send((due, ch.clone(), frame));
                } else if f.late_dup && m == 30 {
                    let hub = hub.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(300));
                        deliver(&hub, &ch, &frame);
                    });
                } else if f.late_dup && m == 10 {
                    deliver(&hub, &ch, &frame);
                    deliver(&hub, &ch, &frame);
                } else if !f.mangle {
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
    }) {}
}

fn start_server(f: Faults) -> String {
    let hub: Hub = Arc::default();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (dtx, drx) = mpsc::channel::<(Instant, String, String)>();
    let dhub = hub.clone();
    std::thread::spawn(move || {
        for (due, ch, frame) in drx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            deliver(&dhub, &ch, &frame);
        }
    });
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (hub, dtx) = (hub.clone(), dtx.clone());
            std::thread::spawn(move || serve_conn(s, hub, f, dtx));
        }
    });
    format!("ws://{addr}/")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// What one subscriber should see for publishes 0..n under `Faults::mangle`, counted
/// independently of loadgen's tracker: (refused, lost, duplicates, reordered, in flight).
/// In flight: the tail after the newest message received, which loadgen reports as in
/// flight at the drain deadline rather than lost.
fn model(n: u64) -> (u64, u64, u64, u64, u64) {
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
    let tail = n - max.map_or(0, |m| m + 1);
    let lost = (n - refused - seen.len() as u64).saturating_sub(tail);
    (refused, lost, dups, reord, tail)
}

#[test]
fn exact_lost_duplicate_reorder_and_refused_counts() {
    let url = start_server(Faults {
        mangle: true,
        ..CLEAN
    });
    let subs = 3u64;
    let r = run_1ch(&url, "2000", "0.6", "1");
    let n = u(&r, "published");
    assert_eq!(
        u(&r, "published_total"),
        n,
        "every publish is in the window"
    );
    assert!(n >= 300, "the publisher kept up: {n} publishes in {r}");
    assert_eq!(u(&r, "unsent_behind_schedule"), 1200 - n, "{r}");
    let (refused, lost, dups, reord, tail) = model(n);
    assert!(refused >= 3 && lost >= 3 && dups >= 3 && reord >= 2);
    assert_eq!(u(&r, "refused_unavailable"), refused, "{r}");
    assert_eq!(u(&r, "expected"), (n - refused) * subs, "{r}");
    assert_eq!(u(&r, "lost"), lost * subs, "{r}");
    assert_eq!(u(&r, "in_flight_at_deadline"), tail * subs, "{r}");
    assert_eq!(u(&r, "duplicates"), dups * subs, "{r}");
    assert_eq!(u(&r, "reordered"), reord * subs, "{r}");
    assert_eq!(
        u(&r, "delivered"),
        (n - refused - lost - tail) * subs,
        "{r}"
    );
}

#[test]
fn stalled_publisher_shows_in_latency_from_intended_send() {
    // Acks come 10 ms late and the window is 1, so the publisher sends ~100/s of the
    // 1,000/s asked for: each message waits behind the schedule, which only the
    // latency from the intended send time shows.
    let url = start_server(Faults {
        ack_delay_ms: 10,
        ..CLEAN
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
    // 500 were due in the window; ~50 went out.
    let unsent = u(&r, "unsent_behind_schedule");
    assert_eq!(unsent + u(&r, "published"), 500, "{r}");
    assert_eq!(r["p50_us"], r["latency_us"]["p50"], "tables use intended");
}

fn run_1ch(url: &str, rate: &str, duration: &str, drain: &str) -> Value {
    loadgen(&[
        "fanout",
        "--url",
        url,
        "--subs",
        "3",
        "--channels",
        "1",
        "--pubs",
        "1",
        "--rate",
        rate,
        "--warmup",
        "0",
        "--duration",
        duration,
        "--drain",
        drain,
    ])
}

#[test]
fn drain_waits_for_every_stream_not_a_delivery_count() {
    // Duplicates make the delivery count reach "expected" while the late messages are
    // still on their way; draining must wait for them, and stop as soon as they came
    // (long before the 5 s deadline).
    let url = start_server(Faults {
        late_dup: true,
        ..CLEAN
    });
    let t = Instant::now();
    let r = run_1ch(&url, "1000", "0.5", "5");
    let n = u(&r, "published");
    assert!(n > 100, "{r}");
    let late = (n + 69) / 100; // s % 100 == 30 below n
    let dup = (n + 89) / 100; // s % 100 == 10 below n
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert_eq!(u(&r, "in_flight_at_deadline"), 0, "{r}");
    assert_eq!(u(&r, "delivered"), n * 3, "{r}");
    assert_eq!(u(&r, "duplicates"), dup * 3, "{r}");
    assert_eq!(u(&r, "reordered"), late * 3, "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "drained to the deadline"
    );
}

#[test]
fn messages_in_flight_at_the_deadline_are_not_lost() {
    // Every delivery is 400 ms late and draining stops 100 ms after publishing: the
    // last ~300 ms of messages are still on their way.
    let url = start_server(Faults {
        delay_all_ms: 400,
        ..CLEAN
    });
    let r = run_1ch(&url, "1000", "0.6", "0.1");
    let n = u(&r, "published");
    let fl = u(&r, "in_flight_at_deadline");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert!(fl >= 3 * 100, "{r}");
    assert_eq!(u(&r, "delivered") + fl, n * 3, "{r}");
}
