//! `fanout` scenario driver: subscribers (threads or child processes) over channels,
//! publishers over WebSocket or Redis, warmup, measured window, drain, then the
//! lost/duplicate/reorder accounting, latency and CPU report.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{my_ids, per_url_conns, resolve_procs, round1, round3, sample};
use crate::cli::{FanoutArgs, PublishVia};
use crate::clock::{now_ns, secs, sleep_until};
use crate::net;
use crate::plan::SubPlan;
use crate::procs;
use crate::procstat::{cpu_steal_ticks, self_cpu_s, steal_pct};
use crate::publisher::{self, PubPlan, PubShared, Via};
use crate::report::{self, Ticker, SATURATION};
use crate::subset::{child_main, SubSet};

pub const ROWS: &[(&str, &str)] = &[
    ("url", "url"),
    ("publish_via", "publish via"),
    ("subs", "subscriber conns"),
    ("subscribed", "subscribed"),
    ("per_url_conns", "subscribed per url"),
    ("per_url_pubs", "publishers per url"),
    ("channels", "channels"),
    ("pubs", "publishers"),
    ("payload", "payload bytes"),
    ("setup_s", "setup s"),
    ("duration_s", "measured s"),
    ("published", "published (window)"),
    ("publishes_per_sec", "publishes/s"),
    ("expected", "expected deliveries"),
    ("delivered", "delivered"),
    ("deliveries_per_sec", "deliveries/s"),
    ("mib_per_sec", "delivered MiB/s"),
    ("compression", "permessage-deflate offered"),
    ("app_bytes_per_delivery", "message bytes per delivery"),
    ("wire_bytes_per_delivery", "wire bytes per delivery"),
    ("refused_unavailable", "refused (unavailable)"),
    ("lost", "lost"),
    ("in_flight_at_deadline", "in flight at drain deadline"),
    ("duplicates", "duplicates"),
    ("reordered", "reordered"),
    ("latency_us", "latency µs (from intended send)"),
    (
        "latency_from_actual_send_us",
        "latency µs (from actual send)",
    ),
    ("publish_errors", "publish errors"),
    (
        "unsent_behind_schedule",
        "unsent (publisher behind schedule)",
    ),
    ("redis_zero_receivers", "PUBLISH with 0 receivers"),
    ("connect_errors", "connect errors"),
    ("handshake_errors", "handshake errors"),
    ("subscribe_errors", "subscribe errors"),
    ("setup_timeouts", "setup timeouts"),
    ("disconnects", "disconnects"),
    ("error_frames", "error frames"),
    ("gap_frames", "gap frames"),
    ("server_cpu_s", "server CPU s"),
    ("server_cpu_pct", "server CPU %"),
    ("deliveries_per_server_cpu_sec", "deliveries/server-CPU-s"),
    ("server_rss_kib", "server RSS KiB"),
    ("kib_per_conn", "server KiB per conn (setup)"),
    ("loadgen_cpu_s", "loadgen CPU s"),
    ("loadgen_max_thread_cpu_pct", "loadgen busiest thread %"),
    ("loadgen_saturated", "loadgen saturated"),
    ("cpu_steal_pct", "host steal % per core"),
];

fn validate(a: &FanoutArgs) -> Result<(), String> {
    if a.subs == 0 || a.channels == 0 || a.pubs == 0 {
        return Err("--subs, --channels and --pubs must be > 0".into());
    }
    if a.subs_per_conn == 0 || a.subs_per_conn > a.channels {
        return Err("--subs-per-conn must be in 1..=--channels".into());
    }
    if a.duration.is_nan()
        || a.duration <= 0.0
        || a.duration > 86_400.0
        || a.warmup < 0.0
        || a.drain < 0.0
    {
        return Err("--duration must be in (0, 86400], --warmup and --drain >= 0".into());
    }
    if a.rate < 0.0 {
        return Err("--rate must be >= 0".into());
    }
    match (a.publish_via == PublishVia::Http, a.pub_url.is_empty()) {
        (true, true) => return Err("--publish-via http needs --pub-url".into()),
        (false, false) => return Err("--pub-url is for --publish-via http only".into()),
        _ => {}
    }
    if a.sub_path.is_some() && a.subs_per_conn != 1 {
        return Err("--sub-path needs --subs-per-conn 1".into());
    }
    Ok(())
}

/// Run the scenario; returns the result JSON (Null in a child process).
pub fn run(a: &FanoutArgs) -> Result<Value, String> {
    validate(a)?;
    let c = &a.common;
    let targets = net::parse_ws_urls(&c.url)?;
    let child = match &c.child {
        Some(s) => Some(procs::parse_child(s).ok_or("bad --child")?),
        None => None,
    };
    let start = now_ns();
    let setup_deadline = start + secs(c.setup_timeout);
    let source_addrs = if c.source_addrs == 0 {
        net::auto_source_addrs(a.subs, c.url.len())
    } else {
        c.source_addrs
    };
    let nprocs = resolve_procs(c.procs, a.subs);
    let plan = SubPlan {
        targets: targets.clone(),
        prefix: c.channel_prefix.clone(),
        channels: a.channels,
        subs_per_conn: a.subs_per_conn,
        pubs: a.pubs,
        source_addrs,
        max_pending: (c.max_pending / nprocs).max(1),
        setup_deadline,
        sub_path: a.sub_path.clone(),
        deflate: a.compression,
    };
    if child.is_some() {
        child_main(plan, my_ids(a.subs, child), c.threads)?;
        return Ok(Value::Null);
    }

    // Server RSS before any connection (baseline) and once everything is subscribed,
    // before traffic: the memory the connections themselves cost.
    let before = sample(&c.server_pid);
    let via = match a.publish_via {
        PublishVia::Ws => Via::Ws(targets.clone()),
        PublishVia::Redis => Via::Redis(net::parse_redis_url(&a.redis)?),
        PublishVia::Http => Via::Http(
            a.pub_url
                .iter()
                .map(|u| crate::http_pub::parse_http_url(u.trim()))
                .collect::<Result<_, _>>()?,
        ),
    };
    let mut set = if nprocs > 1 {
        SubSet::remote(procs::spawn(nprocs)?)
    } else {
        SubSet::local(plan, my_ids(a.subs, None), c.threads)
    };
    let sh = Arc::new(PubShared::default());
    let pplan = PubPlan {
        json_payload: a.payload_kind == crate::cli::PayloadKind::Json,
        via,
        pubs: a.pubs,
        channels: a.channels,
        prefix: c.channel_prefix.clone(),
        payload: a.payload,
        rate: a.rate,
        window: a.window,
        setup_deadline,
        drain_ns: secs(a.drain),
    };
    let sh2 = sh.clone();
    let pub_thread = std::thread::Builder::new()
        .name("lg-pub".into())
        .spawn(move || publisher::run(pplan, sh2))
        .map_err(|e| e.to_string())?;

    let prog = set.progress_handle();
    let (sh3, subs_total) = (sh.clone(), a.subs);
    let last_cell = std::sync::Mutex::new((0u64, 0u64));
    let ticker = Ticker::start(!c.quiet, move |el| {
        let p = prog.get();
        let published = sh3.published.load(Ordering::Relaxed);
        let now = now_ns();
        let ws = sh3.ws.load(Ordering::Relaxed);
        let we = sh3.we.load(Ordering::Relaxed);
        let phase = if ws == u64::MAX {
            "setup"
        } else if now < ws {
            "warmup"
        } else if now < we {
            "measure"
        } else {
            "drain"
        };
        let mut l = last_cell.lock().ok()?;
        let line = format!(
            "[{el:6.1}s] {phase:7} subscribed {}/{} delivered {} (+{}/s) published {} (+{}/s) errors {}",
            p.subscribed,
            subs_total,
            p.delivered,
            p.delivered.saturating_sub(l.0),
            published,
            published.saturating_sub(l.1),
            p.errors
        );
        *l = (p.delivered, published);
        Some(line)
    });

    let ready = set.wait_ready(setup_deadline);
    let (subscribed, setup_errors) = match ready {
        Ok(r) => r,
        Err(e) => {
            set.abort();
            return Err(e);
        }
    };
    while !sh.ready.load(Ordering::Acquire) {
        if let Some(e) = sh.failed.lock().ok().and_then(|f| f.clone()) {
            set.abort();
            return Err(e);
        }
        if now_ns() > setup_deadline + 1_000_000_000 {
            set.abort();
            return Err("publishers not ready before --setup-timeout".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    if subscribed == 0 {
        set.abort();
        return Err(format!(
            "no subscriber could connect and subscribe ({setup_errors} setup errors) to {}",
            c.url_list()
        ));
    }
    let setup_s = (now_ns() - start) as f64 / 1e9;
    let after_setup = sample(&c.server_pid);
    let t0 = now_ns() + 20_000_000;
    let ws = t0 + secs(a.warmup);
    let we = ws + secs(a.duration);
    set.go(ws, we)?;
    sh.ws.store(ws, Ordering::Release);
    sh.we.store(we, Ordering::Release);
    sh.t0.store(t0, Ordering::Release);

    sleep_until(ws);
    let s0 = sample(&c.server_pid);
    let r0 = self_cpu_s();
    let steal0 = cpu_steal_ticks();
    sleep_until(we);
    let s1 = sample(&c.server_pid);
    let r1 = self_cpu_s();
    let steal = steal_pct(&steal0, &cpu_steal_ticks());
    let stop_deadline = we + 5_000_000_000;
    while !sh.stopped.load(Ordering::Acquire) && now_ns() < stop_deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let published = sh.per_stream.lock().map(|v| v.clone()).unwrap_or_default();
    let drain_deadline = now_ns() + secs(a.drain);
    set.finish(&crate::drain::flatten(&published), drain_deadline)?;
    let pres = pub_thread.join().map_err(|_| "publisher thread panicked")?;
    let sres = set.join(drain_deadline + 30_000_000_000)?;
    drop(ticker);

    // Accounting per stream: expected = published in window × subscribers of its channel.
    let nst = pres.per_stream_window.len();
    let mut in_flight = 0u64;
    let mut streams = Vec::with_capacity(nst);
    let (mut expected, mut received, mut dups, mut reord, mut lost) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for k in 0..nst {
        let ch = k % a.channels as usize;
        let subs_ch = sres.subscribed_per_channel.get(ch).copied().unwrap_or(0);
        let refused = pres.refused_per_stream_window.get(k).copied().unwrap_or(0);
        let exp = pres.per_stream_window[k].saturating_sub(refused) * subs_ch;
        let r = sres.streams.get(k).copied().unwrap_or_default();
        let l = exp.saturating_sub(r.received + r.in_flight);
        in_flight += r.in_flight;
        expected += exp;
        received += r.received;
        dups += r.duplicates;
        reord += r.reordered;
        lost += l;
        streams.push(json!({
            "stream": k,
            "publisher": k % a.pubs as usize,
            "channel": format!("{}.{}", c.channel_prefix, ch),
            "published": pres.per_stream_window[k],
            "refused_unavailable": refused,
            "subscribers": subs_ch,
            "expected": exp,
            "received": r.received,
            "lost": l,
            "in_flight_at_deadline": r.in_flight,
            "duplicates": r.duplicates,
            "reordered": r.reordered,
        }));
    }
    let dur = a.duration;
    let server_cpu = match (s0.cpu_s, s1.cpu_s) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let loadgen_cpu = (r1 - r0) + sres.process_cpu_s;
    let max_frac = sres.window_max_thread_frac.max(pres.window_thread_frac);
    let mut res = json!({
        "scenario": "fanout",
        "url": c.url_list(),
        "urls": c.url,
        "per_url_conns": per_url_conns(&sres.per_url_subscribed, targets.len()),
        "per_url_pubs": (a.publish_via == PublishVia::Ws).then(|| net::per_url_counts(a.pubs as usize, targets.len())),
        "publish_via": a.publish_via.name(),
        "sub_path": a.sub_path,
        "subs": a.subs,
        "subscribed": subscribed,
        "channels": a.channels,
        "subs_per_conn": a.subs_per_conn,
        "pubs": a.pubs,
        "payload": a.payload,
        "rate": a.rate,
        "window": a.window,
        "warmup_s": a.warmup,
        "duration_s": dur,
        "threads": c.threads,
        "procs": nprocs,
        "source_addrs": source_addrs,
        "setup_s": round3(setup_s),
        "published": pres.published_window,
        "published_total": pres.published_total,
        "publishes_per_sec": round1(pres.published_window as f64 / dur),
        "publish_acks": pres.acked,
        "publish_errors": pres.errors,
        "refused_unavailable": pres.refused_per_stream_window.iter().sum::<u64>(),
        "refused_unavailable_total": pres.refused_total,
        "publish_error_codes": pres.error_codes,
        "publisher_failures": pres.conn_failures,
        "redis_zero_receivers": (a.publish_via == PublishVia::Redis).then_some(pres.redis_zero_receivers),
        "unacked_at_end": pres.outstanding_at_end,
        "unsent_behind_schedule": pres.unsent_behind_schedule,
        "expected": expected,
        "delivered": received,
        "deliveries_per_sec": round1(received as f64 / dur),
        "mib_per_sec": round3(sres.bytes_window as f64 / dur / 1048576.0),
        "compression": a.compression,
        "app_bytes_per_delivery": round1(sres.bytes_window as f64 / sres.delivered_window.max(1) as f64),
        "wire_bytes_per_delivery": round1(sres.wire_bytes_window as f64 / sres.delivered_window.max(1) as f64),
        "wire_mib_per_sec": round3(sres.wire_bytes_window as f64 / dur / 1048576.0),
        "lost": lost,
        "in_flight_at_deadline": in_flight,
        "duplicates": dups,
        "reordered": reord,
        "latency_us": sres.latency.summary_us(),
        "latency_from_actual_send_us": sres.latency_actual.summary_us(),
        "connect_latency_us": sres.connect_latency.summary_us(),
        "subscribe_latency_us": sres.subscribe_latency.summary_us(),
        "connect_errors": sres.connect_errors,
        "handshake_errors": sres.handshake_errors,
        "subscribe_errors": sres.subscribe_errors,
        "setup_timeouts": sres.setup_timeouts,
        "disconnects": sres.disconnects,
        "error_frames": sres.error_frames,
        "gap_frames": sres.gap_frames,
        "foreign_deliveries": sres.foreign,
        "other_frames": sres.other_frames,
        "unparsed_frames": sres.unparsed,
        "server_pids": c.server_pid,
        "server_cpu_s": server_cpu.map(round3),
        "server_cpu_pct": server_cpu.map(|x| round1(x / dur * 100.0)),
        "cpu_steal_pct": steal,
        "deliveries_per_server_cpu_sec": server_cpu.filter(|&x| x > 0.0).map(|x| round1(received as f64 / x)),
        "server_rss_kib": s1.rss_kib,
        "server_rss_before_kib": before.rss_kib,
        "server_rss_after_setup_kib": after_setup.rss_kib,
        "kib_per_conn": match (before.rss_kib, after_setup.rss_kib) {
            (Some(b), Some(x)) if subscribed > 0 => Some(round3((x as f64 - b as f64) / subscribed as f64)),
            _ => None,
        },
        "loadgen_cpu_s": round3(loadgen_cpu),
        "loadgen_cpu_pct": round1(loadgen_cpu / dur * 100.0),
        "loadgen_sub_threads_cpu_s": round3(sres.window_cpu_s),
        "loadgen_pub_thread_cpu_pct": round1(pres.window_thread_frac * 100.0),
        "loadgen_max_thread_cpu_pct": round1(max_frac * 100.0),
        "loadgen_saturated": max_frac > SATURATION,
        "streams": streams,
    });
    // Flat copies of the end-to-end percentiles for scripts (bench-compare.sh).
    for (k, q) in [
        ("p50_us", "p50"),
        ("p99_us", "p99"),
        ("p999_us", "p999"),
        ("max_us", "max"),
    ] {
        res[k] = res["latency_us"][q].clone();
    }
    if let Some(p) = &c.plot {
        let title = format!(
            "fanout end-to-end latency: {} subs, {} channels, {} pubs via {}, {:.0} deliveries/s",
            subscribed,
            a.channels,
            a.pubs,
            res["publish_via"].as_str().unwrap_or("?"),
            received as f64 / dur
        );
        match crate::plot::write(
            p,
            &title,
            &[
                ("from intended send", &sres.latency),
                ("from actual send", &sres.latency_actual),
            ],
        ) {
            Ok(()) => res["plot"] = json!(p.display().to_string()),
            Err(e) => eprintln!("loadgen: plot: {e}"),
        }
    }
    Ok(res)
}

/// Human table rows plus the worst streams.
pub fn print(res: &Value, json_out: bool) {
    report::emit(res, json_out, "loadgen fanout", ROWS);
    if json_out {
        return;
    }
    if let Some(st) = res["streams"].as_array() {
        let mut bad: Vec<&Value> = st
            .iter()
            .filter(|s| {
                s["lost"].as_u64().unwrap_or(0)
                    + s["duplicates"].as_u64().unwrap_or(0)
                    + s["reordered"].as_u64().unwrap_or(0)
                    > 0
            })
            .collect();
        bad.sort_by_key(|s| std::cmp::Reverse(s["lost"].as_u64().unwrap_or(0)));
        if !bad.is_empty() {
            println!(
                "  streams with loss/dup/reorder ({} of {}), worst first:",
                bad.len(),
                st.len()
            );
            for s in bad.iter().take(10) {
                println!(
                    "    publisher {} {}: published {} expected {} received {} lost {} dup {} reordered {}",
                    s["publisher"], s["channel"].as_str().unwrap_or(""), s["published"], s["expected"],
                    s["received"], s["lost"], s["duplicates"], s["reordered"]
                );
            }
        }
    }
}
