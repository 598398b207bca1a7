//! Publisher thread: `--pubs` connections (WebSocket `publish` frames with `id` acks, or
//! plain TCP Redis connections with pipelined `PUBLISH`), paced to `--rate` or open loop
//! bounded by `--window` outstanding publishes each. Payloads carry publisher id,
//! per-stream sequence number and send time, padded to `--payload` bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::client::{Event, WsConn, WBUF_HIGH};
use crate::clock::{now_ns, thread_cpu_ns};
use crate::http_pub::{encode_post, HttpConn, HttpTarget};
use crate::net::{self, RedisTarget, Target};
use crate::plan::n_streams;
use crate::redis_pub::{encode_command, flush_raw, push_num, RedisConn};
use crate::scan::{scan, Msg};

pub use crate::payload::{build_payload, intended_ns};

#[derive(Debug, Clone)]
pub enum Via {
    /// Server URLs; publisher k connects to `targets[k % len]`.
    Ws(Vec<Target>),
    Redis(RedisTarget),
    /// `POST` to `path` with `{channel}` replaced; publisher k uses `targets[k % len]`.
    Http(Vec<HttpTarget>),
}

#[derive(Debug, Clone)]
pub struct PubPlan {
    pub via: Via,
    pub pubs: u32,
    pub channels: u32,
    pub prefix: String,
    pub payload: usize,
    /// `--payload-kind json`: realistic JSON padding (`build_json_payload`).
    pub json_payload: bool,
    /// Total publishes per second over all publishers; 0 = open loop.
    pub rate: f64,
    /// Outstanding publishes per publisher; 0 = unbounded.
    pub window: u64,
    pub setup_deadline: u64,
    pub drain_ns: u64,
}

/// Shared between the driver and the publisher thread.
pub struct PubShared {
    pub ready: AtomicBool,
    pub failed: Mutex<Option<String>>,
    pub t0: AtomicU64,
    pub ws: AtomicU64,
    pub we: AtomicU64,
    pub stopped: AtomicBool,
    /// Per stream, once publishing stopped: what was published (window and in all).
    pub per_stream: Mutex<Vec<crate::drain::Published>>,
    pub published: AtomicU64,
}

impl Default for PubShared {
    fn default() -> Self {
        PubShared {
            ready: AtomicBool::new(false),
            failed: Mutex::new(None),
            t0: AtomicU64::new(u64::MAX),
            ws: AtomicU64::new(u64::MAX),
            we: AtomicU64::new(u64::MAX),
            stopped: AtomicBool::new(false),
            per_stream: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PubResult {
    pub per_stream_window: Vec<u64>,
    pub per_stream_total: Vec<u64>,
    /// Publishes before the window, per stream (the window's sequence numbers start here).
    pub per_stream_pre_window: Vec<u64>,
    /// Publishes of the window the server refused with an `unavailable` error frame
    /// (never delivered, so not expected and not lost), per stream.
    pub refused_per_stream_window: Vec<u64>,
    /// All publishes refused with `unavailable`, window or not.
    pub refused_total: u64,
    pub published_total: u64,
    pub published_window: u64,
    pub acked: u64,
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub conn_failures: u64,
    /// Redis PUBLISH replies saying 0 clients received the message.
    pub redis_zero_receivers: u64,
    pub outstanding_at_end: u64,
    /// Fixed rate only: publishes scheduled before the window's end (t0 + k/rate < we)
    /// that were never sent because the publisher fell behind.
    pub unsent_behind_schedule: u64,
    pub window_cpu_s: f64,
    pub window_thread_frac: f64,
}

enum PConn {
    Ws(WsConn),
    Redis(RedisConn),
    Http(HttpConn),
}

struct Pub {
    streams: Vec<u32>,
    rr: usize,
    conn: PConn,
    outstanding: u64,
    sent: u64,
    alive: bool,
    next_id: u64,
    /// WebSocket publishes awaiting their ack: id → (stream, inside the window).
    unacked: HashMap<u64, (u32, bool)>,
}

/// Run the publisher thread to completion.
pub fn run(plan: PubPlan, sh: Arc<PubShared>) -> PubResult {
    let fail = |msg: String| {
        if let Ok(mut f) = sh.failed.lock() {
            *f = Some(msg);
        }
    };
    let nstreams = n_streams(plan.pubs, plan.channels) as usize;
    let mut res = PubResult {
        per_stream_window: vec![0; nstreams],
        per_stream_total: vec![0; nstreams],
        refused_per_stream_window: vec![0; nstreams],
        per_stream_pre_window: vec![0; nstreams],
        ..Default::default()
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            fail(format!("poll: {e}"));
            return res;
        }
    };
    let mut pubs: Vec<Pub> = Vec::new();
    for p in 0..plan.pubs {
        let addr = match &plan.via {
            Via::Ws(t) => t[net::url_index(p as usize, t.len())].addr,
            Via::Redis(r) => r.addr,
            Via::Http(t) => t[net::url_index(p as usize, t.len())].addr,
        };
        let mut sock = match net::connect_nb(addr, None) {
            Ok(s) => s,
            Err(e) => {
                fail(format!("publisher {p}: connect {addr}: {e}"));
                return res;
            }
        };
        if let Err(e) = poll.registry().register(
            &mut sock,
            Token(p as usize),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            fail(format!("register: {e}"));
            return res;
        }
        let conn = match &plan.via {
            Via::Ws(t) => {
                let t = &t[net::url_index(p as usize, t.len())];
                PConn::Ws(WsConn::new(sock, &t.host, &t.path, 0x9e37_79b9 ^ p))
            }
            Via::Redis(r) => {
                let mut wbuf = Vec::new();
                let mut skip = 0;
                if let Some(pw) = &r.password {
                    match &r.user {
                        Some(u) => {
                            encode_command(&mut wbuf, &[b"AUTH", u.as_bytes(), pw.as_bytes()])
                        }
                        None => encode_command(&mut wbuf, &[b"AUTH", pw.as_bytes()]),
                    }
                    skip = 1;
                }
                PConn::Redis(RedisConn::new(sock, wbuf, skip))
            }
            Via::Http(_) => PConn::Http(HttpConn::new(sock)),
        };
        pubs.push(Pub {
            streams: (p as usize..nstreams)
                .step_by(plan.pubs as usize)
                .map(|k| k as u32)
                .collect(),
            rr: 0,
            conn,
            outstanding: 0,
            sent: 0,
            alive: true,
            next_id: 0,
            unacked: HashMap::new(),
        });
    }

    let mut events = Events::with_capacity(256);
    let mut rbuf = vec![0u8; 1 << 18];
    let mut seq = vec![0u64; nstreams];
    let mut scratch: Vec<u8> = Vec::with_capacity(plan.payload + 256);
    let mut msg: Vec<u8> = Vec::with_capacity(plan.payload + 256);
    let chan_names: Vec<Vec<u8>> = (0..plan.channels)
        .map(|c| format!("{}.{}", plan.prefix, c).into_bytes())
        .collect();
    // Per publisher (its target's path template), per channel: the POST path.
    let http_paths: Vec<Vec<Vec<u8>>> = match &plan.via {
        Via::Http(t) => (0..plan.pubs as usize)
            .map(|p| {
                let path = &t[net::url_index(p, t.len())].path;
                let ch = |n: &Vec<u8>| path.replace("{channel}", &String::from_utf8_lossy(n));
                chan_names.iter().map(|n| ch(n).into_bytes()).collect()
            })
            .collect(),
        _ => Vec::new(),
    };
    let rate_per_pub = plan.rate / plan.pubs.max(1) as f64;
    let mut ws_mark: Option<(u64, u64)> = None;
    let mut we_mark: Option<(u64, u64)> = None;
    let mut stopped = false;

    loop {
        let now = now_ns();
        let t0 = sh.t0.load(Ordering::Acquire);
        let ws = sh.ws.load(Ordering::Acquire);
        let we = sh.we.load(Ordering::Acquire);
        let publishing = sh.ready.load(Ordering::Relaxed) && now >= t0 && now < we;
        if !sh.ready.load(Ordering::Relaxed) {
            let all = pubs.iter().all(|p| match &p.conn {
                PConn::Ws(w) => w.state == crate::client::State::Open,
                PConn::Redis(r) => r.connected && r.skip == 0,
                PConn::Http(h) => h.connected,
            });
            if all {
                sh.ready.store(true, Ordering::Release);
            } else if now > plan.setup_deadline {
                fail("publishers did not connect before the setup timeout".into());
                return res;
            }
        }
        if ws_mark.is_none() && now >= ws {
            ws_mark = Some((now, thread_cpu_ns()));
        }
        if we_mark.is_none() && now >= we {
            we_mark = Some((now, thread_cpu_ns()));
        }
        if !stopped && now >= we {
            stopped = true;
            if rate_per_pub > 0.0 {
                let due = (we.saturating_sub(t0) as f64 * rate_per_pub / 1e9).ceil() as u64;
                res.unsent_behind_schedule = pubs.iter().map(|p| due.saturating_sub(p.sent)).sum();
            }
            let per = (0..nstreams)
                .map(|k| {
                    let lo = res.per_stream_pre_window[k];
                    crate::drain::Published {
                        lo,
                        hi: lo + res.per_stream_window[k],
                        total: res.per_stream_total[k],
                    }
                })
                .collect();
            if let Ok(mut v) = sh.per_stream.lock() {
                *v = per;
            }
            sh.stopped.store(true, Ordering::Release);
        }
        if stopped {
            let out: u64 = pubs.iter().filter(|p| p.alive).map(|p| p.outstanding).sum();
            if out == 0 || now >= we.saturating_add(plan.drain_ns) {
                res.outstanding_at_end = out;
                break;
            }
        }

        let mut next_due = u64::MAX;
        if publishing {
            for (pi, p) in pubs.iter_mut().enumerate() {
                if !p.alive {
                    continue;
                }
                let window = if plan.window == 0 {
                    u64::MAX
                } else {
                    plan.window
                };
                let room = window.saturating_sub(p.outstanding);
                let mut n = room;
                if rate_per_pub > 0.0 {
                    let el = (now - t0) as f64;
                    let due = (el * rate_per_pub / 1e9) as u64 + 1;
                    n = n.min(due.saturating_sub(p.sent));
                    let t_next = t0 + (((p.sent + n) as f64) * 1e9 / rate_per_pub) as u64;
                    next_due = next_due.min(t_next);
                }
                for _ in 0..n {
                    let pending = match &p.conn {
                        PConn::Ws(w) => w.pending_out(),
                        PConn::Redis(r) => r.wbuf.len() - r.wpos,
                        PConn::Http(h) => h.wbuf.len() - h.wpos,
                    };
                    if pending > WBUF_HIGH {
                        break;
                    }
                    let k = p.streams[p.rr % p.streams.len()] as usize;
                    p.rr += 1;
                    let ch = k % plan.channels as usize;
                    let s = seq[k];
                    seq[k] += 1;
                    let a = now_ns();
                    // Coordinated omission: at a fixed rate this publisher's k-th send is
                    // due at t0 + k/rate; stamping that (not the clock) charges a stalled
                    // publisher's delay to latency. Open loop has no schedule: t = a.
                    let t = if rate_per_pub > 0.0 {
                        intended_ns(t0, p.sent, rate_per_pub)
                    } else {
                        a
                    };
                    scratch.clear();
                    if plan.json_payload {
                        crate::payload::build_json_payload(
                            &mut scratch,
                            pi as u32,
                            s,
                            t,
                            a,
                            plan.payload,
                        );
                    } else {
                        build_payload(&mut scratch, pi as u32, s, t, a, plan.payload);
                    }
                    match &mut p.conn {
                        PConn::Ws(w) => {
                            msg.clear();
                            msg.extend_from_slice(b"{\"type\":\"publish\",\"channel\":\"");
                            msg.extend_from_slice(&chan_names[ch]);
                            msg.extend_from_slice(b"\",\"data\":");
                            msg.extend_from_slice(&scratch);
                            msg.extend_from_slice(b",\"id\":");
                            push_num(&mut msg, p.next_id);
                            msg.push(b'}');
                            p.unacked.insert(p.next_id, (k as u32, t >= ws && t < we));
                            p.next_id += 1;
                            w.queue_text(&msg);
                        }
                        PConn::Redis(r) => {
                            encode_command(&mut r.wbuf, &[b"PUBLISH", &chan_names[ch], &scratch]);
                        }
                        PConn::Http(h) => {
                            let Via::Http(t) = &plan.via else {
                                unreachable!()
                            };
                            let host = &t[net::url_index(pi, t.len())].host;
                            encode_post(&mut h.wbuf, host, &http_paths[pi][ch], &scratch);
                        }
                    }
                    p.outstanding += 1;
                    p.sent += 1;
                    res.published_total += 1;
                    res.per_stream_total[k] += 1;
                    if t < ws {
                        res.per_stream_pre_window[k] += 1;
                    }
                    if t >= ws && t < we {
                        res.published_window += 1;
                        res.per_stream_window[k] += 1;
                    }
                }
                let r = match &mut p.conn {
                    PConn::Ws(w) => w.flush(),
                    PConn::Redis(r) => flush_raw(&mut r.sock, &mut r.wbuf, &mut r.wpos),
                    PConn::Http(h) => h.flush(),
                };
                if r.is_err() {
                    p.alive = false;
                    res.conn_failures += 1;
                }
            }
            sh.published.store(res.published_total, Ordering::Relaxed);
        }

        let now = now_ns();
        let timeout = if next_due != u64::MAX {
            next_due.saturating_sub(now).min(1_000_000)
        } else {
            1_000_000
        };
        let _ = poll.poll(&mut events, Some(Duration::from_nanos(timeout)));
        for ev in events.iter() {
            let Some(p) = pubs.get_mut(ev.token().0) else {
                continue;
            };
            if !p.alive {
                continue;
            }
            let Pub {
                conn,
                outstanding,
                unacked,
                ..
            } = p;
            let ok = match conn {
                PConn::Ws(w) => {
                    let mut ok = !ev.is_writable() || w.on_writable().is_ok();
                    if ok && (ev.is_readable() || ev.is_read_closed()) {
                        let r = w.read(&mut rbuf, &mut |e, _| {
                            if let Event::Text(t, _) = e {
                                match scan(t) {
                                    Msg::Published { id } => {
                                        if let Some(id) = id {
                                            unacked.remove(&id);
                                        }
                                        res.acked += 1;
                                        *outstanding = outstanding.saturating_sub(1);
                                    }
                                    Msg::Error { code, id } => {
                                        res.errors += 1;
                                        *res.error_codes
                                            .entry(String::from_utf8_lossy(code).into_owned())
                                            .or_default() += 1;
                                        if let Some(id) = id {
                                            *outstanding = outstanding.saturating_sub(1);
                                            let sent = unacked.remove(&id);
                                            if let (b"unavailable", Some((k, win))) = (code, sent) {
                                                res.refused_total += 1;
                                                if win {
                                                    res.refused_per_stream_window[k as usize] += 1;
                                                }
                                            }
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        });
                        ok = matches!(r, Ok(true));
                    }
                    ok
                }
                PConn::Redis(r) => {
                    let mut ok = !ev.is_writable() || r.on_writable().is_ok();
                    if ok && (ev.is_readable() || ev.is_read_closed()) {
                        match r.on_readable() {
                            Ok((n, e, z, open)) => {
                                res.acked += n - e;
                                res.redis_zero_receivers += z;
                                res.errors += e;
                                if e > 0 {
                                    *res.error_codes.entry("redis_error".into()).or_default() += e;
                                }
                                *outstanding = outstanding.saturating_sub(n);
                                ok = open;
                            }
                            Err(_) => ok = false,
                        }
                    }
                    ok
                }
                PConn::Http(h) => {
                    let mut ok = !ev.is_writable() || h.on_writable().is_ok();
                    if ok && (ev.is_readable() || ev.is_read_closed()) {
                        match h.on_readable() {
                            Ok(r) => {
                                let n = r.ok + r.failed.len() as u64;
                                res.acked += r.ok;
                                res.errors += r.failed.len() as u64;
                                for st in r.failed {
                                    *res.error_codes.entry(format!("http_{st}")).or_default() += 1;
                                }
                                *outstanding = outstanding.saturating_sub(n);
                                ok = r.open;
                            }
                            Err(_) => ok = false,
                        }
                    }
                    ok
                }
            };
            if !ok {
                p.alive = false;
                res.conn_failures += 1;
                if !sh.ready.load(Ordering::Relaxed) {
                    fail(format!("publisher {} failed during setup", ev.token().0));
                    return res;
                }
            }
        }
    }
    if let (Some((t0, c0)), Some((t1, c1))) = (ws_mark, we_mark) {
        let cpu = c1.saturating_sub(c0) as f64;
        res.window_cpu_s = cpu / 1e9;
        res.window_thread_frac = cpu / (t1.saturating_sub(t0).max(1) as f64);
    }
    res
}
