//! `churn-deliveries` worker thread: its own mio Poll over a share of the subscribers.
//! It connects and subscribes them, then, while publishing runs, drops each one about
//! every `--drop-every` seconds (RST, no close frame), keeps it away for `--offline`,
//! reconnects it and resubscribes (with `since` under `--resume`), and after publishing
//! stops lets the offline ones come back and catch up until everyone has everything or
//! the drain ends. It owns the connection life cycle only; what a subscriber received is
//! `churn_deliveries_sub`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::churn_deliveries_sub::{Ctx, Sub};
use crate::cli::SecsRange;
use crate::client::{Event, State, WsConn};
use crate::clock::{now_ns, secs, thread_cpu_ns};
use crate::net::{self, Target};
use crate::plan::conn_channels;

/// What every worker is told about the run.
pub(super) struct Cfg {
    pub(super) targets: Vec<Target>,
    pub(super) prefix: String,
    pub(super) channels: u32,
    pub(super) subs_per_conn: u32,
    pub(super) pubs: u32,
    pub(super) source_addrs: u32,
    pub(super) max_pending: usize,
    pub(super) setup_deadline: u64,
    pub(super) drop_every_ns: u64,
    pub(super) offline: SecsRange,
    pub(super) resume: bool,
    pub(super) seed: u64,
}

/// Shared between the driver and the workers.
pub(super) struct Shared {
    /// Publishing runs in [t0, tend); u64::MAX until set.
    pub(super) t0: AtomicU64,
    pub(super) tend: AtomicU64,
    pub(super) finish: AtomicBool,
    pub(super) drain_deadline: AtomicU64,
    /// Messages published per stream, final once `finish` is set.
    pub(super) published: Mutex<Vec<u64>>,
    pub(super) abort: AtomicBool,
    pub(super) workers_ready: AtomicUsize,
    pub(super) subscribed: AtomicU64,
    pub(super) setup_errors: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) drops: AtomicU64,
    pub(super) reconnects: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            t0: AtomicU64::new(u64::MAX),
            tend: AtomicU64::new(u64::MAX),
            finish: AtomicBool::new(false),
            drain_deadline: AtomicU64::new(u64::MAX),
            published: Mutex::new(Vec::new()),
            abort: AtomicBool::new(false),
            workers_ready: AtomicUsize::new(0),
            subscribed: AtomicU64::new(0),
            setup_errors: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }
}

/// Setup failures (subscribers that never got subscribed and take no part).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SetupErrors {
    pub(super) connect: u64,
    pub(super) handshake: u64,
    pub(super) subscribe: u64,
    pub(super) timeouts: u64,
}

/// What a worker hands back: its subscribers (those that got through setup) and
/// how it went.
#[derive(Default)]
pub(super) struct WorkerResult {
    pub(super) subs: Vec<Sub>,
    pub(super) setup: SetupErrors,
    /// Subscribers not connected and subscribed when the worker stopped.
    pub(super) offline_at_end: u64,
    pub(super) max_frac: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Connecting(u64),
    Subscribing(u64),
    Live,
    Offline(u64),
    /// Failed during setup: takes no part in the run.
    Out,
}

struct Slot {
    sub: Sub,
    conn: Option<WsConn>,
    phase: Phase,
    pending: u32,
    opened: bool,
    ever_live: bool,
    next_drop: u64,
    live_since: u64,
    rng: u64,
}

/// A connection or subscribe that takes longer than this is given up and retried.
const OP_TIMEOUT_NS: u64 = 10_000_000_000;
/// Wait before retrying a failed reconnect.
const RETRY_NS: u64 = 250_000_000;
/// A subscriber stays at least this long once resubscribed before its next drop.
const MIN_ONLINE_NS: u64 = 50_000_000;

/// splitmix64: a uniform f64 in [0, 1).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Slot {
    fn offline_ns(&mut self, r: SecsRange) -> u64 {
        secs(r.min + (r.max - r.min) * unit(&mut self.rng))
    }

    /// One drop-to-drop interval: 50%..150% of --drop-every.
    fn period_ns(&mut self, every: u64) -> u64 {
        (every as f64 * (0.5 + unit(&mut self.rng))) as u64
    }

    /// Close the connection abruptly (RST): what a client losing its network looks like.
    fn close(&mut self, poll: &Poll) {
        if let Some(mut c) = self.conn.take() {
            let _ = poll.registry().deregister(&mut c.sock);
            let _ = socket2::SockRef::from(&c.sock).set_linger(Some(Duration::ZERO));
        }
        self.opened = false;
        self.pending = 0;
    }
}

fn connect(slot: &mut Slot, i: usize, cfg: &Cfg, poll: &Poll, now: u64) -> bool {
    let gid = slot.sub.gid;
    let nt = cfg.targets.len();
    let target = &cfg.targets[net::url_index(gid, nt)];
    let src = net::source_ip(net::source_slot(gid, nt), cfg.source_addrs, &target.addr);
    let Ok(mut sock) = net::connect_nb(target.addr, src) else {
        return false;
    };
    if poll
        .registry()
        .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
        .is_err()
    {
        return false;
    }
    let seed = (gid as u32) ^ (now as u32) | 1;
    slot.conn = Some(WsConn::new(sock, &target.host, &target.path, seed));
    slot.phase = Phase::Connecting(now);
    slot.opened = false;
    true
}

/// Run one worker over global subscriber ids `mine` until the run is over.
pub(super) fn worker(cfg: Arc<Cfg>, mine: Vec<usize>, sh: Arc<Shared>) -> WorkerResult {
    let mut res = WorkerResult::default();
    let Ok(mut poll) = Poll::new() else {
        res.setup.connect = mine.len() as u64;
        sh.setup_errors
            .fetch_add(mine.len() as u64, Ordering::Relaxed);
        sh.workers_ready.fetch_add(1, Ordering::Release);
        return res;
    };
    let nt = cfg.targets.len();
    let mut slots: Vec<Slot> = mine
        .iter()
        .map(|&gid| Slot {
            sub: Sub::new(
                gid,
                net::url_index(gid, nt),
                conn_channels(gid, cfg.subs_per_conn, cfg.channels),
                cfg.pubs,
                cfg.channels,
            ),
            conn: None,
            phase: Phase::NotStarted,
            pending: 0,
            opened: false,
            ever_live: false,
            next_drop: u64::MAX,
            live_since: 0,
            rng: cfg.seed ^ (gid as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
        })
        .collect();
    let mut cx = Ctx {
        prefix: cfg.prefix.as_bytes().to_vec(),
        pubs: cfg.pubs,
        channels: cfg.channels,
        t0: 0,
    };
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; 1 << 16];
    let (mut next_start, mut pending, mut resolved) = (0usize, 0usize, 0usize);
    let mut setup = true;
    let mut scheduled = false;
    let mut published: Option<Vec<u64>> = None;
    let cpu0 = thread_cpu_ns();
    let wall0 = now_ns();
    let mut reported = 0u64;

    loop {
        let now = now_ns();
        while setup && next_start < slots.len() && pending < cfg.max_pending {
            let i = next_start;
            next_start += 1;
            if connect(&mut slots[i], i, &cfg, &poll, now) {
                pending += 1;
            } else {
                res.setup.connect += 1;
                slots[i].phase = Phase::Out;
                resolved += 1;
            }
        }

        let _ = poll.poll(&mut events, Some(Duration::from_millis(2)));
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Slot {
                sub, conn, opened, ..
            } = slot;
            let Some(ws) = conn.as_mut() else { continue };
            let mut alive = !(ev.is_writable() && ws.on_writable().is_err());
            let mut replies: Vec<Result<usize, ()>> = Vec::new();
            let mut server_close = None;
            if alive && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let r = ws.read(&mut rbuf, &mut |e, t| match e {
                    Event::Open => *opened = true,
                    Event::Text(text, _) => {
                        if let Some(r) = sub.on_text(&cx, text, t) {
                            replies.push(r);
                        }
                    }
                    Event::Close(code) => server_close = Some(code),
                    Event::Binary => sub.c.other += 1,
                });
                alive = matches!(r, Ok(true)) && server_close.is_none();
            }
            let now = now_ns();
            if let Some(code) = server_close {
                let code = code.map_or("none".to_string(), |c| c.to_string());
                slot.sub.log(
                    &cx,
                    now,
                    format!("server closed the connection (code {code})"),
                );
            }
            for r in replies {
                if let Phase::Subscribing(_) = slot.phase {
                    slot.pending = slot.pending.saturating_sub(1);
                    if r.is_err() {
                        if setup && !slot.ever_live {
                            alive = false;
                        } else {
                            slot.sub.c.resubscribe_errors += 1;
                        }
                    }
                }
            }
            if alive && slot.opened && matches!(slot.phase, Phase::Connecting(_)) {
                let reconnect = slot.ever_live;
                let mut cmds = Vec::new();
                for j in 0..slot.sub.chans.len() {
                    let since = match (cfg.resume && reconnect, slot.sub.offsets[j].clone()) {
                        (true, Some(o)) => {
                            slot.sub.c.resubscribes_since += 1;
                            Some(o)
                        }
                        (true, None) => {
                            slot.sub.c.resumes_without_offset += 1;
                            None
                        }
                        _ => None,
                    };
                    cmds.push(slot.sub.subscribe_cmd(&cx, now, j, since));
                }
                let ws = slot.conn.as_mut().expect("connected");
                for c in &cmds {
                    ws.queue_text(c.as_bytes());
                }
                alive = ws.flush().is_ok();
                slot.pending = cmds.len() as u32;
                slot.phase = Phase::Subscribing(now);
            }
            if alive && slot.pending == 0 && matches!(slot.phase, Phase::Subscribing(_)) {
                slot.phase = Phase::Live;
                slot.live_since = now;
                if !slot.ever_live {
                    slot.ever_live = true;
                    sh.subscribed.fetch_add(1, Ordering::Relaxed);
                    pending -= 1;
                    resolved += 1;
                }
            }
            if !alive {
                let state = slot.conn.as_ref().map(|c| c.state);
                slot.close(&poll);
                if !slot.ever_live {
                    match (slot.phase, state) {
                        (Phase::Connecting(_), Some(State::Connecting)) => res.setup.connect += 1,
                        (Phase::Connecting(_), _) => res.setup.handshake += 1,
                        _ => res.setup.subscribe += 1,
                    }
                    slot.phase = Phase::Out;
                    pending -= 1;
                    resolved += 1;
                } else {
                    if matches!(slot.phase, Phase::Live | Phase::Subscribing(_)) {
                        slot.sub.c.server_closes += 1;
                    } else {
                        slot.sub.c.reconnect_errors += 1;
                        slot.sub.log(&cx, now, "reconnect failed".into());
                    }
                    let off = slot.offline_ns(cfg.offline).max(RETRY_NS);
                    slot.phase = Phase::Offline(now + off);
                }
            }
        }

        let now = now_ns();
        if setup && (resolved >= slots.len() || now >= cfg.setup_deadline) {
            setup = false;
            for s in slots.iter_mut().filter(|s| !s.ever_live) {
                if s.phase != Phase::Out {
                    res.setup.timeouts += 1;
                    s.close(&poll);
                    s.phase = Phase::Out;
                }
            }
            let e = res.setup;
            sh.setup_errors.fetch_add(
                e.connect + e.handshake + e.subscribe + e.timeouts,
                Ordering::Relaxed,
            );
            sh.workers_ready.fetch_add(1, Ordering::Release);
        }
        let t0 = sh.t0.load(Ordering::Acquire);
        let tend = sh.tend.load(Ordering::Acquire);
        if !setup && !scheduled && t0 != u64::MAX {
            // First drop of each subscriber at a uniform phase of its first interval, so
            // drops are spread over time instead of arriving together.
            scheduled = true;
            cx.t0 = t0;
            for s in slots.iter_mut() {
                let p = s.period_ns(cfg.drop_every_ns) as f64;
                s.next_drop = t0 + (p * unit(&mut s.rng)) as u64;
            }
        }
        if published.is_none() && sh.finish.load(Ordering::Acquire) {
            published = sh.published.lock().ok().map(|v| v.clone());
        }

        // Timers: drops while publishing runs, reconnects, stuck operations.
        let mut delivered = 0u64;
        for (i, s) in slots.iter_mut().enumerate() {
            delivered += s.sub.delivered_frames;
            match s.phase {
                Phase::Live
                    if scheduled
                        && now < tend
                        && now >= s.next_drop
                        && now >= s.live_since + MIN_ONLINE_NS =>
                {
                    let pos = s.sub.position(&cx);
                    s.sub.log(&cx, now, format!("drop ({pos})"));
                    s.close(&poll);
                    s.sub.c.drops += 1;
                    sh.drops.fetch_add(1, Ordering::Relaxed);
                    let off = s.offline_ns(cfg.offline);
                    s.phase = Phase::Offline(now + off);
                    while s.next_drop <= now {
                        s.next_drop += s.period_ns(cfg.drop_every_ns).max(1);
                    }
                }
                Phase::Offline(until) if now >= until => {
                    s.sub.c.reconnects += 1;
                    sh.reconnects.fetch_add(1, Ordering::Relaxed);
                    s.sub.log(&cx, now, "reconnect".into());
                    if !connect(s, i, &cfg, &poll, now) {
                        s.sub.c.reconnect_errors += 1;
                        s.sub.log(&cx, now, "connect failed".into());
                        s.phase = Phase::Offline(now + RETRY_NS);
                    }
                }
                Phase::Connecting(t) | Phase::Subscribing(t)
                    if !setup && s.ever_live && now > t + OP_TIMEOUT_NS =>
                {
                    s.sub.c.reconnect_errors += 1;
                    s.sub
                        .log(&cx, now, "reconnect or resubscribe timed out".into());
                    s.close(&poll);
                    s.phase = Phase::Offline(now + RETRY_NS);
                }
                _ => {}
            }
        }
        if delivered != reported {
            sh.delivered
                .fetch_add(delivered - reported, Ordering::Relaxed);
            reported = delivered;
        }
        if sh.abort.load(Ordering::Relaxed) {
            break;
        }
        if let Some(p) = &published {
            let done = slots
                .iter()
                .filter(|s| s.phase != Phase::Out)
                .all(|s| s.phase == Phase::Live && s.sub.complete(p));
            if done || now >= sh.drain_deadline.load(Ordering::Acquire) {
                break;
            }
        }
    }
    let cpu = (thread_cpu_ns() - cpu0) as f64;
    res.max_frac = cpu / (now_ns().saturating_sub(wall0).max(1) as f64);
    for mut s in slots {
        if s.phase == Phase::Out {
            continue;
        }
        if s.phase != Phase::Live {
            res.offline_at_end += 1;
        }
        s.close(&poll);
        res.subs.push(s.sub);
    }
    res
}
