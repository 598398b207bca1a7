//! `churn` worker thread: its own mio Poll running connect → subscribe → hold →
//! disconnect cycles at its share of the rate and concurrency, and the per-worker result
//! (counters and latency histograms, mergeable and JSON-serialisable for children).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::cli::CloseMode;
use crate::client::{Event, State, WsConn};
use crate::clock::{now_ns, thread_cpu_ns};
use crate::net::{self, Target};
use crate::scan::{scan, Msg};
use crate::stats::Hist;

#[derive(Clone)]
pub(super) struct Cfg {
    /// Server URLs; cycle `gid` connects to `targets[gid % len]`.
    pub(super) targets: Vec<Target>,
    pub(super) prefix: String,
    pub(super) channels: u32,
    pub(super) source_addrs: u32,
    pub(super) hold_ns: u64,
    pub(super) close: CloseMode,
    pub(super) op_timeout_ns: u64,
}

/// One worker's share.
#[derive(Clone, Copy)]
pub(super) struct Share {
    pub(super) rate: f64,
    pub(super) concurrency: usize,
    pub(super) max_cycles: u64,
    pub(super) offset: u64,
    pub(super) stride: u64,
}

#[derive(Default)]
pub(super) struct Live {
    pub(super) completed: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) started: AtomicU64,
}

#[derive(Default, Clone)]
pub(super) struct ChurnResult {
    pub(super) started: u64,
    pub(super) opened: u64,
    pub(super) completed: u64,
    pub(super) connect_errors: u64,
    pub(super) handshake_errors: u64,
    pub(super) subscribe_errors: u64,
    pub(super) timeouts: u64,
    pub(super) unexpected_closes: u64,
    pub(super) close_timeouts: u64,
    pub(super) error_frames: u64,
    pub(super) connect_lat: Hist,
    pub(super) sub_lat: Hist,
    pub(super) cycle_lat: Hist,
    pub(super) cpu_s: f64,
    pub(super) max_frac: f64,
    /// Upgrades completed per `--url`.
    pub(super) per_url_opened: Vec<u64>,
}

impl ChurnResult {
    fn counters(&mut self) -> [(&'static str, &mut u64); 10] {
        [
            ("started", &mut self.started),
            ("opened", &mut self.opened),
            ("completed", &mut self.completed),
            ("connect_errors", &mut self.connect_errors),
            ("handshake_errors", &mut self.handshake_errors),
            ("subscribe_errors", &mut self.subscribe_errors),
            ("timeouts", &mut self.timeouts),
            ("unexpected_closes", &mut self.unexpected_closes),
            ("close_timeouts", &mut self.close_timeouts),
            ("error_frames", &mut self.error_frames),
        ]
    }

    pub(super) fn merge(&mut self, o: &ChurnResult) {
        let mut o2 = o.clone();
        for ((_, a), (_, b)) in self.counters().into_iter().zip(o2.counters()) {
            *a += *b;
        }
        self.connect_lat.merge(&o.connect_lat);
        self.sub_lat.merge(&o.sub_lat);
        self.cycle_lat.merge(&o.cycle_lat);
        self.cpu_s += o.cpu_s;
        self.max_frac = self.max_frac.max(o.max_frac);
        if self.per_url_opened.len() < o.per_url_opened.len() {
            self.per_url_opened.resize(o.per_url_opened.len(), 0);
        }
        for (a, b) in self.per_url_opened.iter_mut().zip(&o.per_url_opened) {
            *a += b;
        }
    }

    pub(super) fn errors(&self) -> u64 {
        self.connect_errors
            + self.handshake_errors
            + self.subscribe_errors
            + self.timeouts
            + self.unexpected_closes
    }

    pub(super) fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut me = self.clone();
        for (k, v) in me.counters() {
            m.insert(k.into(), json!(*v));
        }
        m.insert("connect_lat".into(), self.connect_lat.to_json());
        m.insert("sub_lat".into(), self.sub_lat.to_json());
        m.insert("cycle_lat".into(), self.cycle_lat.to_json());
        m.insert("cpu_s".into(), json!(self.cpu_s));
        m.insert("max_frac".into(), json!(self.max_frac));
        m.insert("per_url_opened".into(), json!(self.per_url_opened));
        Value::Object(m)
    }

    pub(super) fn from_json(v: &Value) -> ChurnResult {
        let mut r = ChurnResult::default();
        for (k, slot) in r.counters() {
            *slot = v.get(k).and_then(Value::as_u64).unwrap_or(0);
        }
        let h = |k: &str| v.get(k).map(Hist::from_json).unwrap_or_default();
        r.connect_lat = h("connect_lat");
        r.sub_lat = h("sub_lat");
        r.cycle_lat = h("cycle_lat");
        r.cpu_s = v.get("cpu_s").and_then(Value::as_f64).unwrap_or(0.0);
        r.max_frac = v.get("max_frac").and_then(Value::as_f64).unwrap_or(0.0);
        r.per_url_opened = v
            .get("per_url_opened")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        r
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
pub(super) enum Phase {
    Setup,
    Hold(u64),
    Closing(u64),
}

pub(super) struct Cyc {
    ws: WsConn,
    t_start: u64,
    t_sub: u64,
    opened: bool,
    subscribed: bool,
    sub_error: bool,
    got_close: bool,
    phase: Phase,
    channel: u32,
    url: usize,
}

pub(super) fn worker(cfg: Arc<Cfg>, sh: Share, t0: u64, tend: u64, live: Arc<Live>) -> ChurnResult {
    let mut r = ChurnResult::default();
    let Ok(mut poll) = Poll::new() else {
        return r;
    };
    crate::clock::sleep_until(t0);
    let cpu0 = thread_cpu_ns();
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Cyc>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut inflight = 0usize;
    let mut rbuf = vec![0u8; 1 << 16];
    let mut touched: Vec<usize> = Vec::new();
    let mut last_sweep = 0u64;
    let hard_end = tend + cfg.op_timeout_ns + 3_000_000_000;
    let mut errs_reported = 0;

    loop {
        let now = now_ns();
        if now >= hard_end || (now >= tend && inflight == 0) {
            break;
        }
        while now < tend
            && (sh.max_cycles == 0 || r.started < sh.max_cycles)
            && inflight < sh.concurrency
            && (sh.rate <= 0.0 || (r.started as f64) < ((now - t0) as f64 * sh.rate / 1e9) + 1.0)
        {
            let gid = sh.offset + r.started * sh.stride;
            r.started += 1;
            let nt = cfg.targets.len();
            let url = net::url_index(gid as usize, nt);
            let target = &cfg.targets[url];
            let src = net::source_ip(
                net::source_slot(gid as usize, nt),
                cfg.source_addrs,
                &target.addr,
            );
            let t_start = now_ns();
            let mut sock = match net::connect_nb(target.addr, src) {
                Ok(s) => s,
                Err(_) => {
                    r.connect_errors += 1;
                    continue;
                }
            };
            let slot = free.pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            if poll
                .registry()
                .register(
                    &mut sock,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                r.connect_errors += 1;
                free.push(slot);
                continue;
            }
            slots[slot] = Some(Cyc {
                ws: WsConn::new(sock, &target.host, &target.path, gid as u32 ^ 0x5bd1e995),
                t_start,
                t_sub: 0,
                opened: false,
                subscribed: false,
                sub_error: false,
                got_close: false,
                phase: Phase::Setup,
                channel: (gid % cfg.channels as u64) as u32,
                url,
            });
            inflight += 1;
        }
        live.started.store(r.started, Ordering::Relaxed);

        let _ = poll.poll(&mut events, Some(Duration::from_millis(1)));
        touched.clear();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = slots.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let mut dead = false;
            if ev.is_writable() && c.ws.on_writable().is_err() {
                dead = true;
            }
            if !dead && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let Cyc {
                    ws,
                    opened,
                    subscribed,
                    sub_error,
                    got_close,
                    ..
                } = c;
                let res = ws.read(&mut rbuf, &mut |e, _| match e {
                    Event::Open => *opened = true,
                    Event::Text(t, _) => match scan(t) {
                        Msg::Subscribed { .. } => *subscribed = true,
                        Msg::Error { .. } => {
                            r.error_frames += 1;
                            *sub_error = true;
                        }
                        _ => {}
                    },
                    Event::Close(_) => *got_close = true,
                    Event::Binary => {}
                });
                dead = !matches!(res, Ok(true));
            }
            if dead {
                let c = slots[i].take();
                if let Some(c) = c {
                    if matches!(c.phase, Phase::Closing(_)) {
                        r.completed += 1;
                        r.cycle_lat.record(now_ns() - c.t_start);
                    } else {
                        match c.ws.state {
                            State::Connecting => r.connect_errors += 1,
                            State::Handshake => r.handshake_errors += 1,
                            _ if !c.subscribed => r.subscribe_errors += 1,
                            _ => r.unexpected_closes += 1,
                        }
                    }
                }
                free.push(i);
                inflight -= 1;
            } else {
                touched.push(i);
            }
        }
        let now = now_ns();
        let sweep = now - last_sweep > 5_000_000;
        if sweep {
            last_sweep = now;
            touched.clear();
            touched.extend((0..slots.len()).filter(|&i| slots[i].is_some()));
        }
        for &i in &touched {
            let Some(c) = slots[i].as_mut() else { continue };
            let mut finish: Option<bool> = None; // Some(true) completed, Some(false) dropped
            if c.opened && c.t_sub == 0 {
                r.opened += 1;
                if r.per_url_opened.len() <= c.url {
                    r.per_url_opened.resize(c.url + 1, 0);
                }
                r.per_url_opened[c.url] += 1;
                r.connect_lat.record(now - c.t_start);
                c.t_sub = now;
                let m = format!(
                    "{{\"type\":\"subscribe\",\"channel\":\"{}.{}\"}}",
                    cfg.prefix, c.channel
                );
                c.ws.queue_text(m.as_bytes());
                let _ = c.ws.flush();
            }
            if c.phase == Phase::Setup && c.sub_error {
                r.subscribe_errors += 1;
                finish = Some(false);
            } else if c.phase == Phase::Setup && c.subscribed {
                r.sub_lat.record(now - c.t_sub);
                c.phase = Phase::Hold(now + cfg.hold_ns);
            }
            if let Phase::Hold(until) = c.phase {
                if now >= until {
                    match cfg.close {
                        CloseMode::Clean => {
                            c.ws.queue_close(1000);
                            let _ = c.ws.flush();
                            c.phase = Phase::Closing(now + 2_000_000_000);
                        }
                        CloseMode::Abort => {
                            let _ =
                                socket2::SockRef::from(&c.ws.sock).set_linger(Some(Duration::ZERO));
                            finish = Some(true);
                        }
                    }
                }
            }
            match c.phase {
                Phase::Setup if now > c.t_start + cfg.op_timeout_ns => {
                    r.timeouts += 1;
                    finish = Some(false);
                }
                Phase::Closing(until) if now >= until => {
                    if !c.got_close {
                        r.close_timeouts += 1;
                    }
                    finish = Some(true);
                }
                _ => {}
            }
            if let Some(done) = finish {
                if done {
                    r.completed += 1;
                    r.cycle_lat.record(now - c.t_start);
                }
                slots[i] = None;
                free.push(i);
                inflight -= 1;
            }
        }
        live.completed.store(r.completed, Ordering::Relaxed);
        let e = r.errors();
        if e != errs_reported {
            live.errors.fetch_add(e - errs_reported, Ordering::Relaxed);
            errs_reported = e;
        }
    }
    r.timeouts += inflight as u64;
    let cpu = (thread_cpu_ns() - cpu0) as f64;
    r.cpu_s = cpu / 1e9;
    r.max_frac = cpu / (now_ns().saturating_sub(t0).max(1) as f64);
    r
}
