//! Subscriber worker loop (`run`): owns a share of the subscriber connections in its own
//! mio Poll, connects them (bounded concurrency, spread over source addresses),
//! subscribes, then receives deliveries, tracking sequence numbers and latency. It only
//! reads and bumps the shared `Control`; it never spawns threads or processes (that is
//! `subset`) and never decides the plan (that is `plan`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::{Events, Interest, Poll, Token};

use crate::client::{Event, Failure, State, WsConn};
use crate::clock::{now_ns, thread_cpu_ns};
use crate::control::Control;
use crate::drain::{conn_complete, in_flight, streams_of_channel, unflatten, Published};
use crate::net;
use crate::plan::{conn_channels, n_streams, stream_of, SubPlan};
use crate::scan::{channel_index, scan, scan_payload, Msg};
use crate::seq::{Seen, Tracker};
use crate::stats::{StreamRecv, SubResult};

struct St {
    gid: usize,
    chans: Vec<u32>,
    pending_subs: u32,
    t_start: u64,
    t_sub: u64,
    opened: bool,
    ready: bool,
    failed: Option<Failure>,
    sub_failed: bool,
    /// Every stream complete (set while draining).
    complete: bool,
    /// Per channel slot, per publisher-on-that-channel.
    trk: Vec<Vec<Tracker>>,
}

struct Conn {
    ws: WsConn,
    st: St,
}

/// Run one worker over global connection ids `mine` until the run is over.
pub fn run(plan: Arc<SubPlan>, mine: Vec<usize>, ctl: Arc<Control>) -> SubResult {
    let mut res = SubResult {
        streams: vec![StreamRecv::default(); n_streams(plan.pubs, plan.channels) as usize],
        subscribed_per_channel: vec![0; plan.channels as usize],
        per_url_subscribed: vec![0; plan.targets.len()],
        threads: 1,
        ..Default::default()
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("loadgen: cannot create poll: {e}");
            res.connect_errors = mine.len() as u64;
            ctl.worker_ready(0, mine.len() as u64);
            return res;
        }
    };
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = (0..mine.len()).map(|_| None).collect();
    let mut rbuf = vec![0u8; 1 << 20];
    let prefix = plan.prefix.as_bytes().to_vec();
    let (pubs, channels) = (plan.pubs, plan.channels);
    let raw = plan.sub_path.is_some();

    let mut next_start = 0usize;
    let mut pending = 0usize;
    let mut resolved = 0usize;
    let mut setup = true;
    let setup_t0 = now_ns();
    let setup_cpu0 = thread_cpu_ns();
    let mut ws_mark: Option<(u64, u64)> = None;
    let mut we_mark: Option<(u64, u64)> = None;
    let mut published: Option<Vec<Published>> = None;
    let mut next_check = 0u64;
    let mut reported = 0u64;
    let mut errors_reported = 0u64;

    loop {
        // Start new connections while under the pending bound.
        while setup && next_start < mine.len() && pending < plan.max_pending {
            let i = next_start;
            next_start += 1;
            let gid = mine[i];
            let nt = plan.targets.len();
            let target = &plan.targets[net::url_index(gid, nt)];
            let src = net::source_ip(net::source_slot(gid, nt), plan.source_addrs, &target.addr);
            let started = now_ns();
            match net::connect_nb(target.addr, src) {
                Ok(mut sock) => {
                    if poll
                        .registry()
                        .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        res.connect_errors += 1;
                        resolved += 1;
                        continue;
                    }
                    let chans = conn_channels(gid, plan.subs_per_conn, channels);
                    let trk = chans.iter().map(|_| Vec::new()).collect();
                    let path = match &plan.sub_path {
                        // The channel is in the URL: `<url path><template>`.
                        Some(tpl) => format!(
                            "{}{}",
                            target.path.trim_end_matches('/'),
                            tpl.replace("{channel}", &format!("{}.{}", plan.prefix, chans[0]))
                        ),
                        None => target.path.clone(),
                    };
                    conns[i] = Some(Conn {
                        ws: {
                            let mut ws =
                                WsConn::new(sock, &target.host, &path, gid as u32 ^ started as u32);
                            if plan.deflate {
                                ws.offer_deflate();
                            }
                            ws
                        },
                        st: St {
                            gid,
                            chans,
                            pending_subs: 0,
                            t_start: started,
                            t_sub: 0,
                            opened: false,
                            ready: false,
                            failed: None,
                            sub_failed: false,
                            complete: false,
                            trk,
                        },
                    });
                    pending += 1;
                }
                Err(_) => {
                    res.connect_errors += 1;
                    resolved += 1;
                }
            }
        }

        let _ = poll.poll(&mut events, Some(std::time::Duration::from_millis(5)));
        let ws = ctl.ws.load(Ordering::Acquire);
        let we = ctl.we.load(Ordering::Acquire);

        for ev in events.iter() {
            let i = ev.token().0;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let Conn { ws: wsc, st } = conn;
            let mut alive = true;
            if ev.is_writable() {
                if let Err(f) = wsc.on_writable() {
                    st.failed = Some(f);
                    alive = false;
                }
            }
            if alive && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let r = wsc.read(&mut rbuf, &mut |e, now| {
                    on_event(st, e, now, ws, we, &prefix, pubs, channels, raw, &mut res)
                });
                match r {
                    Ok(true) => {}
                    Ok(false) => alive = false,
                    Err(f) => {
                        st.failed = Some(f);
                        alive = false;
                    }
                }
            }
            if alive && st.opened && st.t_sub == 0 {
                let now = now_ns();
                res.connect_latency.record(now - st.t_start);
                st.t_sub = now;
                // With --sub-path the URL is the subscription: nothing to send or await.
                st.pending_subs = if raw { 0 } else { st.chans.len() as u32 };
                for &c in st.chans.iter().filter(|_| !raw) {
                    let msg = format!(
                        "{{\"type\":\"subscribe\",\"channel\":\"{}.{}\"}}",
                        plan.prefix, c
                    );
                    wsc.queue_text(msg.as_bytes());
                }
                if wsc.flush().is_err() {
                    st.failed = Some(Failure::Io);
                    alive = false;
                }
            }
            if alive && !st.ready && st.t_sub != 0 && st.pending_subs == 0 && !st.sub_failed {
                st.ready = true;
                res.subscribe_latency.record(now_ns() - st.t_sub);
                res.conns_ok += 1;
                for &c in &st.chans {
                    res.subscribed_per_channel[c as usize] += 1;
                }
                res.per_url_subscribed[net::url_index(st.gid, plan.targets.len())] += 1;
                ctl.subscribed.fetch_add(1, Ordering::Relaxed);
                pending -= 1;
                resolved += 1;
            }
            if alive && st.sub_failed && !st.ready {
                res.subscribe_errors += 1;
                alive = false;
                st.failed = Some(Failure::Protocol);
            }
            if !alive {
                if st.ready {
                    res.disconnects += 1;
                } else {
                    if !st.sub_failed {
                        match (st.failed, wsc.state) {
                            (Some(Failure::Connect), _) | (None, State::Connecting) => {
                                res.connect_errors += 1
                            }
                            (_, State::Handshake) | (Some(Failure::Handshake), _) => {
                                res.handshake_errors += 1
                            }
                            _ => res.subscribe_errors += 1,
                        }
                    }
                    pending -= 1;
                    resolved += 1;
                }
                let _ = st.gid;
                conns[i] = None;
            }
        }

        let now = now_ns();
        if setup && (resolved >= mine.len() || now >= plan.setup_deadline) {
            setup = false;
            for c in conns.iter_mut() {
                if c.as_ref().is_some_and(|c| !c.st.ready) {
                    res.setup_timeouts += 1;
                    *c = None;
                }
            }
            let wall = (now - setup_t0).max(1) as f64;
            let cpu = (thread_cpu_ns() - setup_cpu0) as f64;
            res.setup_cpu_s = cpu / 1e9;
            res.setup_max_thread_frac = cpu / wall;
            ctl.worker_ready(res.conns_ok, res.setup_errors());
        }
        if ws_mark.is_none() && now >= ws {
            ws_mark = Some((now, thread_cpu_ns()));
        }
        if we_mark.is_none() && now >= we {
            we_mark = Some((now, thread_cpu_ns()));
        }
        if res.delivered_total != reported {
            ctl.delivered
                .fetch_add(res.delivered_total - reported, Ordering::Relaxed);
            reported = res.delivered_total;
        }
        let errs = res.setup_errors() + res.disconnects + res.error_frames;
        if errs != errors_reported {
            ctl.errors
                .fetch_add(errs - errors_reported, Ordering::Relaxed);
            errors_reported = errs;
        }
        if ctl.abort.load(Ordering::Relaxed) {
            break;
        }
        if !setup && ctl.finish.load(Ordering::Acquire) {
            // Stop when every live connection has every message of its streams (not on
            // a delivery count, which duplicates and foreign deliveries inflate), or at
            // the deadline. Checked every 10 ms, skipping connections already complete.
            let pubd = published.get_or_insert_with(|| {
                unflatten(&ctl.published.lock().map(|v| v.clone()).unwrap_or_default())
            });
            if now >= ctl.drain_deadline.load(Ordering::Acquire) {
                break;
            }
            if now >= next_check {
                next_check = now + 10_000_000;
                let mut all = true;
                for c in conns.iter_mut().flatten() {
                    if !c.st.complete {
                        c.st.complete = conn_complete(&c.st.chans, &c.st.trk, pubd, pubs, channels);
                        all &= c.st.complete;
                    }
                }
                if all {
                    break;
                }
            }
        }
    }
    // What is still missing at the tail of a stream was in flight when draining stopped.
    if let Some(pubd) = &published {
        for c in conns.iter().flatten() {
            for (&ch, v) in c.st.chans.iter().zip(&c.st.trk) {
                for (j, k) in streams_of_channel(ch, pubs, channels) {
                    if let (Some(&p), Some(sr)) =
                        (pubd.get(k as usize), res.streams.get_mut(k as usize))
                    {
                        sr.in_flight += in_flight(v.get(j), p);
                    }
                }
            }
        }
    }
    if let (Some((t0, c0)), Some((t1, c1))) = (ws_mark, we_mark) {
        let cpu = c1.saturating_sub(c0) as f64;
        res.window_cpu_s = cpu / 1e9;
        res.window_max_thread_frac = cpu / (t1.saturating_sub(t0).max(1) as f64);
    }
    res
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn on_event(
    st: &mut St,
    e: Event,
    now: u64,
    ws: u64,
    we: u64,
    prefix: &[u8],
    pubs: u32,
    channels: u32,
    raw: bool,
    res: &mut SubResult,
) {
    let (text, wire_len) = match e {
        Event::Open => {
            st.opened = true;
            return;
        }
        Event::Text(t, wire) => (t, wire),
        Event::Binary | Event::Close(_) => {
            res.other_frames += 1;
            return;
        }
    };
    let msg = if raw {
        // A bare payload on this connection's one channel (or anything else: foreign).
        match scan_payload(text) {
            Some((p, s, t, a)) => Msg::Delivery {
                channel: b"",
                p,
                s,
                t,
                a,
            },
            None => Msg::Foreign { channel: b"" },
        }
    } else {
        scan(text)
    };
    match msg {
        Msg::Delivery {
            channel,
            p,
            s,
            t,
            a,
        } => {
            res.delivered_total += 1;
            let ch = if raw {
                st.chans.first().copied()
            } else {
                channel_index(channel, prefix)
            };
            let Some(ch) = ch else {
                res.foreign += 1;
                return;
            };
            let (Some(slot), Some(k)) = (
                st.chans.iter().position(|&c| c == ch),
                stream_of(p as u32, ch, pubs, channels).filter(|_| p < pubs as u64),
            ) else {
                res.foreign += 1;
                return;
            };
            let j = if pubs >= channels {
                (p as u32 / channels) as usize
            } else {
                0
            };
            let v = &mut st.trk[slot];
            if v.len() <= j {
                v.resize(j + 1, Tracker::new());
            }
            let seen = v[j].observe(s);
            if t >= ws && t < we {
                res.delivered_window += 1;
                res.bytes_window += text.len() as u64;
                res.wire_bytes_window += wire_len as u64;
                res.latency.record(now.saturating_sub(t));
                res.latency_actual.record(now.saturating_sub(a));
                let sr = &mut res.streams[k as usize];
                match seen {
                    Seen::InOrder | Seen::Gap(_) => sr.received += 1,
                    Seen::Reordered => {
                        sr.received += 1;
                        sr.reordered += 1;
                    }
                    Seen::Duplicate => sr.duplicates += 1,
                }
            }
        }
        Msg::Subscribed { .. } => {
            if st.pending_subs > 0 {
                st.pending_subs -= 1;
            } else {
                res.other_frames += 1;
            }
        }
        Msg::Error { .. } => {
            res.error_frames += 1;
            if !st.ready {
                st.sub_failed = true;
            }
        }
        Msg::Gap { .. } => res.gap_frames += 1,
        Msg::Foreign { .. } => {
            res.delivered_total += 1;
            res.foreign += 1;
        }
        Msg::Unparsed => res.unparsed += 1,
        Msg::Published { .. } | Msg::Unsubscribed { .. } | Msg::Other => res.other_frames += 1,
    }
}
