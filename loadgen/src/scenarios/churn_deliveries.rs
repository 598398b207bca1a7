//! `churn-deliveries` scenario driver: validates the flags, starts the subscribers that
//! keep dropping and reconnecting (worker threads, `churn_deliveries_worker`) and the
//! publisher thread (`publisher`: a fixed rate, a sequence number per stream), sets the
//! publishing window, samples server CPU over it, then the drain; the accounting and the
//! output are `churn_deliveries_report`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::churn_deliveries_report::{report, Window};
use super::churn_deliveries_worker::{worker, Cfg, Shared, WorkerResult};
use super::sample;
use crate::cli::{ChurnDeliveriesArgs, PublishVia};
use crate::clock::{now_ns, secs, sleep_until};
use crate::net;
use crate::procstat::{cpu_steal_ticks, self_cpu_s, steal_pct};
use crate::publisher::{self, PubPlan, PubShared, Via};
use crate::report::Ticker;

pub use super::churn_deliveries_report::{print, ROWS};

fn validate(a: &ChurnDeliveriesArgs) -> Result<(), String> {
    if a.subs == 0 || a.channels == 0 || a.pubs == 0 {
        return Err("--subs, --channels and --pubs must be > 0".into());
    }
    if a.subs_per_conn == 0 || a.subs_per_conn > a.channels {
        return Err("--subs-per-conn must be in 1..=--channels".into());
    }
    if a.duration.is_nan() || a.duration <= 0.0 || a.duration > 86_400.0 {
        return Err("--duration must be in (0, 86400]".into());
    }
    if a.rate.is_nan() || a.rate <= 0.0 {
        return Err("--rate must be > 0 (publishes/s)".into());
    }
    if a.drop_every.is_nan() || a.drop_every <= 0.0 || a.drain.is_nan() || a.drain < 0.0 {
        return Err("--drop-every must be > 0 and --drain >= 0".into());
    }
    if a.resume && a.publish_via == PublishVia::Redis {
        return Err(
            "--resume needs --publish-via ws: a raw Redis PUBLISH never enters the server's history"
                .into(),
        );
    }
    if a.common.procs > 1 {
        return Err("churn-deliveries runs in one process (use --threads)".into());
    }
    if a.subs > super::per_proc_capacity() {
        return Err(format!(
            "--subs {} is over what one process may open ({})",
            a.subs,
            super::per_proc_capacity()
        ));
    }
    Ok(())
}

pub fn run(a: &ChurnDeliveriesArgs) -> Result<Value, String> {
    validate(a)?;
    let c = &a.common;
    let targets = net::parse_ws_urls(&c.url)?;
    let start = now_ns();
    let setup_deadline = start + secs(c.setup_timeout);
    let source_addrs = if c.source_addrs == 0 {
        net::auto_source_addrs(a.subs, targets.len())
    } else {
        c.source_addrs
    };
    let threads = c.threads.clamp(1, a.subs);
    let drain = if a.drain > 0.0 {
        a.drain
    } else {
        a.offline.max + 3.0
    };
    let cfg = Arc::new(Cfg {
        targets: targets.clone(),
        prefix: c.channel_prefix.clone(),
        channels: a.channels,
        subs_per_conn: a.subs_per_conn,
        pubs: a.pubs,
        source_addrs,
        max_pending: (c.max_pending / threads).max(1),
        setup_deadline,
        drop_every_ns: secs(a.drop_every),
        offline: a.offline,
        resume: a.resume,
        seed: a.seed,
    });
    let sh = Arc::new(Shared::default());
    let before = sample(&c.server_pid);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<usize> = (t..a.subs).step_by(threads).collect();
            let (cfg, sh) = (cfg.clone(), sh.clone());
            std::thread::Builder::new()
                .name(format!("lg-cd-{t}"))
                .spawn(move || worker(cfg, mine, sh))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let psh = Arc::new(PubShared::default());
    let pplan = PubPlan {
        json_payload: false,
        via: match a.publish_via {
            PublishVia::Ws => Via::Ws(targets.clone()),
            PublishVia::Redis => Via::Redis(net::parse_redis_url(&a.redis)?),
            PublishVia::Http => return Err("--publish-via http is for `fanout` only".into()),
        },
        pubs: a.pubs,
        channels: a.channels,
        prefix: c.channel_prefix.clone(),
        payload: a.payload,
        rate: a.rate,
        window: a.window,
        setup_deadline,
        drain_ns: 2_000_000_000,
    };
    let psh2 = psh.clone();
    let pub_thread = std::thread::Builder::new()
        .name("lg-pub".into())
        .spawn(move || publisher::run(pplan, psh2))
        .map_err(|e| e.to_string())?;
    let abort = |sh: &Shared, e: String| {
        sh.abort.store(true, Ordering::Relaxed);
        e
    };

    let (sh2, psh3, subs_total) = (sh.clone(), psh.clone(), a.subs);
    let ticker = Ticker::start(!c.quiet, move |el| {
        Some(format!(
            "[{el:6.1}s] subscribed {}/{} published {} delivered {} drops {} reconnects {}",
            sh2.subscribed.load(Ordering::Relaxed),
            subs_total,
            psh3.published.load(Ordering::Relaxed),
            sh2.delivered.load(Ordering::Relaxed),
            sh2.drops.load(Ordering::Relaxed),
            sh2.reconnects.load(Ordering::Relaxed),
        ))
    });
    while sh.workers_ready.load(Ordering::Acquire) < threads {
        if now_ns() > setup_deadline + 5_000_000_000 {
            return Err(abort(&sh, "subscriber workers did not finish setup".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    while !psh.ready.load(Ordering::Acquire) {
        if let Some(e) = psh.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(abort(&sh, e));
        }
        if now_ns() > setup_deadline + 1_000_000_000 {
            return Err(abort(
                &sh,
                "publishers not ready before --setup-timeout".into(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let subscribed = sh.subscribed.load(Ordering::Relaxed);
    if subscribed == 0 {
        return Err(abort(
            &sh,
            format!(
                "no subscriber could connect and subscribe to {}",
                c.url_list()
            ),
        ));
    }

    // Publishing runs in [t0, tend); every subscriber is subscribed before t0.
    let t0 = now_ns() + 20_000_000;
    let tend = t0 + secs(a.duration);
    sh.t0.store(t0, Ordering::Release);
    sh.tend.store(tend, Ordering::Release);
    psh.ws.store(t0, Ordering::Release);
    psh.we.store(tend, Ordering::Release);
    psh.t0.store(t0, Ordering::Release);
    sleep_until(t0);
    let s0 = sample(&c.server_pid);
    let r0 = self_cpu_s();
    let steal0 = cpu_steal_ticks();
    sleep_until(tend);
    let s1 = sample(&c.server_pid);
    let r1 = self_cpu_s();
    let steal = steal_pct(&steal0, &cpu_steal_ticks());
    let pres = pub_thread.join().map_err(|_| "publisher thread panicked")?;
    if let Ok(mut p) = sh.published.lock() {
        *p = pres.per_stream_total.clone();
    }
    sh.drain_deadline
        .store(now_ns() + secs(drain), Ordering::Release);
    sh.finish.store(true, Ordering::Release);
    let mut results: Vec<WorkerResult> = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| "churn-deliveries worker panicked")?);
    }
    drop(ticker);
    Ok(report(
        a,
        c,
        &pres,
        results,
        Window {
            before,
            s0,
            s1,
            r0,
            r1,
            steal,
            subscribed,
            source_addrs,
            drain,
        },
    ))
}
