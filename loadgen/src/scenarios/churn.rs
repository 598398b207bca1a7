//! `churn` scenario: connect → subscribe → (hold) → disconnect cycles started at a
//! target rate with bounded concurrency, over threads and processes; reports cycle and
//! connect rates, connect/subscribe/cycle latency and every kind of error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::churn_worker::{worker, Cfg, ChurnResult, Live, Share};
use super::{resolve_procs, round1, round3, sample};
use crate::cli::{ChurnArgs, CloseMode};
use crate::clock::{now_ns, secs};
use crate::net;
use crate::procs;
use crate::report::{self, Ticker, SATURATION};

pub const ROWS: &[(&str, &str)] = &[
    ("url", "url"),
    ("rate", "target connects/s"),
    ("concurrency", "concurrency"),
    ("duration_s", "duration s"),
    ("started", "cycles started"),
    ("completed", "cycles completed"),
    ("per_url_conns", "opened per url"),
    ("connects_per_sec", "connects/s"),
    ("cycles_per_sec", "cycles/s"),
    ("connect_latency_us", "connect latency µs"),
    ("subscribe_latency_us", "subscribe latency µs"),
    ("cycle_latency_us", "cycle latency µs"),
    ("connect_errors", "connect errors"),
    ("handshake_errors", "handshake errors"),
    ("subscribe_errors", "subscribe errors"),
    ("timeouts", "timeouts"),
    ("unexpected_closes", "unexpected closes"),
    ("close_timeouts", "close timeouts"),
    ("error_frames", "error frames"),
    ("server_cpu_s", "server CPU s"),
    ("server_rss_before_kib", "server RSS before KiB"),
    ("server_rss_after_kib", "server RSS after KiB"),
    ("loadgen_cpu_s", "loadgen CPU s"),
    ("loadgen_max_thread_cpu_pct", "loadgen busiest thread %"),
    ("loadgen_saturated", "loadgen saturated"),
];

/// Run this process's share (`proc_i` of `nprocs`) with `threads` workers.
fn run_local(
    a: &ChurnArgs,
    cfg: Arc<Cfg>,
    proc_i: usize,
    nprocs: usize,
    t0: u64,
    tend: u64,
    live: Arc<Live>,
) -> ChurnResult {
    let threads = a.common.threads.max(1);
    let parts = (nprocs * threads) as u64;
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let widx = (proc_i * threads + w) as u64;
            let per = |total: u64| total / parts + u64::from(widx < total % parts);
            let sh = Share {
                rate: a.rate / parts as f64,
                concurrency: ((a.concurrency as u64) / parts).max(1) as usize,
                max_cycles: if a.conns == 0 { 0 } else { per(a.conns).max(1) },
                offset: widx,
                stride: parts,
            };
            let (cfg, live) = (cfg.clone(), live.clone());
            std::thread::spawn(move || worker(cfg, sh, t0, tend, live))
        })
        .collect();
    let mut total = ChurnResult::default();
    for h in handles {
        match h.join() {
            Ok(r) => total.merge(&r),
            Err(_) => eprintln!("loadgen: churn worker panicked"),
        }
    }
    total
}

pub fn run(a: &ChurnArgs) -> Result<Value, String> {
    if a.resume {
        return Err(
            "`churn` measures connection cycles; delivery under churn with resume is \
             `loadgen churn-deliveries --resume` (see docs/loadgen.md)"
                .into(),
        );
    }
    if a.channels == 0
        || a.concurrency == 0
        || a.duration.is_nan()
        || a.duration <= 0.0
        || a.duration > 86_400.0
        || a.rate < 0.0
    {
        return Err(
            "--channels, --concurrency, --duration must be > 0 (duration ≤ 86400), --rate ≥ 0"
                .into(),
        );
    }
    let c = &a.common;
    let targets = net::parse_ws_urls(&c.url)?;
    let nurls = targets.len();
    let expected_conns = if a.conns > 0 {
        a.conns as usize
    } else {
        (a.rate * a.duration) as usize
    };
    let source_addrs = if c.source_addrs == 0 {
        net::auto_source_addrs(expected_conns, nurls)
    } else {
        c.source_addrs
    };
    let cfg = Arc::new(Cfg {
        targets,
        prefix: c.channel_prefix.clone(),
        channels: a.channels,
        source_addrs,
        hold_ns: a.hold_ms * 1_000_000,
        close: a.close,
        op_timeout_ns: secs(a.op_timeout),
    });
    let nprocs = resolve_procs(c.procs, a.concurrency);
    if let Some(s) = &c.child {
        let (i, n) = procs::parse_child(s).ok_or("bad --child")?;
        return child(a, cfg, i, n).map(|_| Value::Null);
    }
    let before = sample(&c.server_pid);
    let live = Arc::new(Live::default());
    let mut kids = if nprocs > 1 {
        procs::spawn(nprocs)?
    } else {
        Vec::new()
    };
    for k in kids.iter_mut() {
        k.expect("READY", now_ns() + 30_000_000_000)?;
    }
    let t0 = now_ns() + 20_000_000;
    let tend = t0 + secs(a.duration);
    for k in kids.iter_mut() {
        k.send(&format!("GO {t0} {tend}"))?;
    }
    let arcs: Vec<_> = kids.iter().map(|k| k.progress_arc()).collect();
    let l2 = live.clone();
    let last = std::sync::Mutex::new(0u64);
    let ticker = Ticker::start(!c.quiet, move |el| {
        let (mut done, mut errs, mut started) = (
            l2.completed.load(Ordering::Relaxed),
            l2.errors.load(Ordering::Relaxed),
            l2.started.load(Ordering::Relaxed),
        );
        for a in &arcs {
            done += a[0].load(Ordering::Relaxed);
            errs += a[1].load(Ordering::Relaxed);
            started += a[2].load(Ordering::Relaxed);
        }
        let mut l = last.lock().ok()?;
        let line = format!(
            "[{el:6.1}s] cycles started {started} completed {done} (+{}/s) errors {errs}",
            done.saturating_sub(*l)
        );
        *l = done;
        Some(line)
    });
    let mut total = if nprocs > 1 {
        ChurnResult::default()
    } else {
        run_local(a, cfg.clone(), 0, 1, t0, tend, live.clone())
    };
    let end_deadline = tend + secs(a.op_timeout) + 30_000_000_000;
    for k in kids.iter_mut() {
        let line = k.expect("RESULT", end_deadline)?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad child result: {e}"))?;
        total.merge(&ChurnResult::from_json(&v));
        k.wait();
    }
    drop(ticker);
    let t_done = now_ns();
    let after = sample(&c.server_pid);
    let elapsed = (t_done - t0) as f64 / 1e9;
    let server_cpu = match (before.cpu_s, after.cpu_s) {
        (Some(x), Some(y)) => Some(round3(y - x)),
        _ => None,
    };
    let mut res = json!({
        "scenario": "churn",
        "url": c.url_list(),
        "urls": c.url,
        "per_url_conns": super::per_url_conns(&total.per_url_opened, nurls),
        "rate": a.rate,
        "concurrency": a.concurrency,
        "max_cycles": a.conns,
        "duration_s": a.duration,
        "elapsed_s": round3(elapsed),
        "hold_ms": a.hold_ms,
        "close": match a.close { CloseMode::Clean => "clean", CloseMode::Abort => "abort" },
        "channels": a.channels,
        "threads": c.threads,
        "procs": nprocs,
        "source_addrs": source_addrs,
        "started": total.started,
        "opened": total.opened,
        "completed": total.completed,
        "connects_per_sec": round1(total.opened as f64 / a.duration.min(elapsed).max(1e-9)),
        "cycles_per_sec": round1(total.completed as f64 / elapsed.max(1e-9)),
        "connect_latency_us": total.connect_lat.summary_us(),
        "subscribe_latency_us": total.sub_lat.summary_us(),
        "cycle_latency_us": total.cycle_lat.summary_us(),
        "connect_errors": total.connect_errors,
        "handshake_errors": total.handshake_errors,
        "subscribe_errors": total.subscribe_errors,
        "timeouts": total.timeouts,
        "unexpected_closes": total.unexpected_closes,
        "close_timeouts": total.close_timeouts,
        "error_frames": total.error_frames,
        "errors": total.errors(),
        "server_pids": c.server_pid,
        "server_cpu_s": server_cpu,
        "server_rss_before_kib": before.rss_kib,
        "server_rss_after_kib": after.rss_kib,
        "loadgen_cpu_s": round3(total.cpu_s),
        "loadgen_max_thread_cpu_pct": round1(total.max_frac * 100.0),
        "loadgen_saturated": total.max_frac > SATURATION,
    });
    if let Some(p) = &c.plot {
        let title = format!(
            "churn: {} cycles, connect/subscribe/cycle latency",
            total.completed
        );
        match crate::plot::write(
            p,
            &title,
            &[
                ("connect", &total.connect_lat),
                ("subscribe", &total.sub_lat),
                ("cycle", &total.cycle_lat),
            ],
        ) {
            Ok(()) => res["plot"] = json!(p.display().to_string()),
            Err(e) => eprintln!("loadgen: plot: {e}"),
        }
    }
    Ok(res)
}

fn child(a: &ChurnArgs, cfg: Arc<Cfg>, i: usize, n: usize) -> Result<(), String> {
    use std::io::BufRead;
    println!("READY 0 0");
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("parent went away".into());
        }
        if line.starts_with("GO") {
            break;
        }
    }
    let mut it = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<u64>().unwrap_or(0));
    let (t0, tend) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    let live = Arc::new(Live::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prog = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                println!(
                    "PROG {} {} {}",
                    live.completed.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed),
                    live.started.load(Ordering::Relaxed)
                );
            }
        })
    };
    let r = run_local(a, cfg, i, n, t0, tend, live);
    stop.store(true, Ordering::Relaxed);
    let _ = prog.join();
    println!("RESULT {}", r.to_json());
    Ok(())
}

pub fn print(res: &Value, json_out: bool) {
    report::emit(res, json_out, "loadgen churn", ROWS);
}
