//! `conns` scenario driver: open many subscribed idle connections (over several source
//! addresses and processes), report connect rate, connect/subscribe latency, and server
//! memory per connection, then hold them open and count drops.

use serde_json::{json, Value};

use super::{my_ids, per_url_conns, resolve_procs, round1, round3, sample};
use crate::cli::ConnsArgs;
use crate::clock::{now_ns, secs, sleep_until};
use crate::net;
use crate::plan::SubPlan;
use crate::procs;
use crate::report::{self, Ticker, SATURATION};
use crate::subset::{child_main, SubSet};

pub const ROWS: &[(&str, &str)] = &[
    ("url", "url"),
    ("conns", "connections wanted"),
    ("subscribed", "connected+subscribed"),
    ("per_url_conns", "subscribed per url"),
    ("channels", "channels"),
    ("procs", "processes"),
    ("source_addrs", "source addresses"),
    ("setup_s", "setup s"),
    ("connects_per_sec", "connects/s"),
    ("connect_latency_us", "connect latency µs"),
    ("subscribe_latency_us", "subscribe latency µs"),
    ("connect_errors", "connect errors"),
    ("handshake_errors", "handshake errors"),
    ("subscribe_errors", "subscribe errors"),
    ("setup_timeouts", "setup timeouts"),
    ("hold_s", "held s"),
    ("disconnects", "dropped while held"),
    ("server_rss_before_kib", "server RSS before KiB"),
    ("server_rss_after_kib", "server RSS after KiB"),
    ("kib_per_conn", "server KiB per conn"),
    ("server_cpu_setup_s", "server CPU s (setup)"),
    ("loadgen_cpu_setup_s", "loadgen CPU s (setup)"),
    ("loadgen_max_thread_cpu_pct", "loadgen busiest thread %"),
    ("loadgen_saturated", "loadgen saturated"),
];

pub fn run(a: &ConnsArgs) -> Result<Value, String> {
    if a.conns == 0 || a.channels == 0 || a.subs_per_conn == 0 || a.subs_per_conn > a.channels {
        return Err("--conns and --channels must be > 0, --subs-per-conn in 1..=--channels".into());
    }
    if a.hold < 0.0 || a.hold > 86_400.0 {
        return Err("--hold must be in [0, 86400]".into());
    }
    let c = &a.common;
    let targets = net::parse_ws_urls(&c.url)?;
    let nurls = targets.len();
    let child = match &c.child {
        Some(s) => Some(procs::parse_child(s).ok_or("bad --child")?),
        None => None,
    };
    let start = now_ns();
    let setup_deadline = start + secs(c.setup_timeout);
    let source_addrs = if c.source_addrs == 0 {
        net::auto_source_addrs(a.conns, nurls)
    } else {
        c.source_addrs
    };
    let nprocs = resolve_procs(c.procs, a.conns);
    let plan = SubPlan {
        deflate: false,
        targets,
        prefix: c.channel_prefix.clone(),
        channels: a.channels,
        subs_per_conn: a.subs_per_conn,
        pubs: 0,
        source_addrs,
        max_pending: (c.max_pending / nprocs).max(1),
        setup_deadline,
        sub_path: None,
    };
    if child.is_some() {
        child_main(plan, my_ids(a.conns, child), c.threads)?;
        return Ok(Value::Null);
    }
    let before = sample(&c.server_pid);
    let t_start = now_ns();
    let mut set = if nprocs > 1 {
        SubSet::remote(procs::spawn(nprocs)?)
    } else {
        SubSet::local(plan, my_ids(a.conns, None), c.threads)
    };
    let prog = set.progress_handle();
    let total = a.conns;
    let last = std::sync::Mutex::new(0u64);
    let ticker = Ticker::start(!c.quiet, move |el| {
        let p = prog.get();
        let mut l = last.lock().ok()?;
        let line = format!(
            "[{el:6.1}s] subscribed {}/{} (+{}/s) errors {}",
            p.subscribed,
            total,
            p.subscribed.saturating_sub(*l),
            p.errors
        );
        *l = p.subscribed;
        Some(line)
    });
    let (ok, _errs) = match set.wait_ready(setup_deadline) {
        Ok(r) => r,
        Err(e) => {
            set.abort();
            return Err(e);
        }
    };
    let t_ready = now_ns();
    let setup_s = (t_ready - t_start) as f64 / 1e9;
    let after_setup = sample(&c.server_pid);
    let we = t_ready + secs(a.hold);
    set.go(t_ready, we)?;
    sleep_until(we);
    let after_hold = sample(&c.server_pid);
    set.finish(&[], now_ns())?;
    let sres = set.join(now_ns() + 30_000_000_000)?;
    drop(ticker);

    let rss_after = after_hold.rss_kib.or(after_setup.rss_kib);
    let kib_per_conn = match (before.rss_kib, rss_after) {
        (Some(b), Some(a)) if ok > 0 => Some(round3((a as f64 - b as f64) / ok as f64)),
        _ => None,
    };
    let server_cpu = match (before.cpu_s, after_setup.cpu_s) {
        (Some(x), Some(y)) => Some(round3(y - x)),
        _ => None,
    };
    let frac = sres.setup_max_thread_frac;
    let mut res = json!({
        "scenario": "conns",
        "url": c.url_list(),
        "urls": c.url,
        "per_url_conns": per_url_conns(&sres.per_url_subscribed, nurls),
        "conns": a.conns,
        "subscribed": ok,
        "channels": a.channels,
        "subs_per_conn": a.subs_per_conn,
        "threads": c.threads,
        "procs": nprocs,
        "source_addrs": source_addrs,
        "setup_s": round3(setup_s),
        "connects_per_sec": round1(ok as f64 / setup_s.max(1e-9)),
        "connect_latency_us": sres.connect_latency.summary_us(),
        "subscribe_latency_us": sres.subscribe_latency.summary_us(),
        "connect_errors": sres.connect_errors,
        "handshake_errors": sres.handshake_errors,
        "subscribe_errors": sres.subscribe_errors,
        "setup_timeouts": sres.setup_timeouts,
        "error_frames": sres.error_frames,
        "gap_frames": sres.gap_frames,
        "hold_s": a.hold,
        "disconnects": sres.disconnects,
        "server_pids": c.server_pid,
        "server_rss_before_kib": before.rss_kib,
        "server_rss_after_setup_kib": after_setup.rss_kib,
        "server_rss_after_kib": rss_after,
        "kib_per_conn": kib_per_conn,
        "server_cpu_setup_s": server_cpu,
        "loadgen_cpu_setup_s": round3(sres.setup_cpu_s),
        "loadgen_max_thread_cpu_pct": round1(frac * 100.0),
        "loadgen_saturated": frac > SATURATION,
    });
    if let Some(p) = &c.plot {
        let title = format!("conns: {ok} connections, connect and subscribe latency");
        match crate::plot::write(
            p,
            &title,
            &[
                ("connect", &sres.connect_latency),
                ("subscribe", &sres.subscribe_latency),
            ],
        ) {
            Ok(()) => res["plot"] = json!(p.display().to_string()),
            Err(e) => eprintln!("loadgen: plot: {e}"),
        }
    }
    Ok(res)
}

pub fn print(res: &Value, json_out: bool) {
    report::emit(res, json_out, "loadgen conns", ROWS);
}
