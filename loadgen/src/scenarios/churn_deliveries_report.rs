//! `churn-deliveries` accounting and output: from the subscribers the workers hand back
//! and what the publisher published, the run's JSON (expected per subscriber = everything
//! published on its streams; delivered, delivery ratio rounded down, duplicates, reorders,
//! gaps, reconnects, server CPU; the worst subscribers in detail with their event logs),
//! and the human table.

use serde_json::{json, Value};

use super::churn_deliveries_sub::{Counters, Ctx, Sub};
use super::churn_deliveries_worker::{SetupErrors, WorkerResult};
use super::{round1, round3};
use crate::cli::ChurnDeliveriesArgs;
use crate::publisher;
use crate::report::{self, SATURATION};

pub const ROWS: &[(&str, &str)] = &[
    ("url", "url"),
    ("resume", "resume (since)"),
    ("subs", "subscribers"),
    ("subscribed", "subscribed at start"),
    ("channels", "channels"),
    ("pubs", "publishers"),
    ("rate", "publishes/s"),
    ("duration_s", "publishing s"),
    ("drop_every_s", "drop every s (±50%)"),
    ("offline_s", "offline s"),
    ("published", "published"),
    ("expected_per_sub", "expected per subscriber"),
    ("expected", "expected deliveries"),
    ("delivered", "delivered (distinct)"),
    ("lost", "lost"),
    ("delivery_ratio_pct", "delivery ratio %"),
    ("worst_sub_ratio_pct", "worst subscriber %"),
    ("duplicates", "duplicates"),
    ("reordered", "reordered"),
    ("gaps", "gap frames"),
    ("drops", "drops"),
    ("reconnects", "reconnects"),
    ("resubscribes_since", "resubscribes with since"),
    ("resumes_without_offset", "resumes without an offset"),
    ("reconnect_errors", "reconnect errors"),
    ("resubscribe_errors", "resubscribe errors"),
    ("server_closes", "closed by the server"),
    ("offline_at_end", "offline at the end"),
    ("incomplete_subs", "subscribers missing messages"),
    ("publish_errors", "publish errors"),
    ("unacked_at_end", "publishes unacked at end"),
    ("error_frames", "error frames"),
    ("foreign_deliveries", "foreign deliveries"),
    ("unparsed_frames", "unparsed frames"),
    ("setup_errors", "setup errors"),
    ("server_cpu_s", "server CPU s"),
    ("server_cpu_pct", "server CPU %"),
    ("server_rss_kib", "server RSS KiB"),
    ("loadgen_cpu_s", "loadgen CPU s"),
    ("loadgen_max_thread_cpu_pct", "loadgen busiest thread %"),
    ("cpu_steal_pct", "host steal % per core"),
];

/// min / mean / max of a list, for the JSON.
fn spread(v: &[u64]) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    let sum: u64 = v.iter().sum();
    json!({
        "min": v.iter().min(),
        "mean": round1(sum as f64 / v.len() as f64),
        "max": v.iter().max(),
    })
}

/// delivered / expected in percent, rounded *down* to 3 decimals: 100.000 only when
/// nothing at all is missing.
fn ratio_pct(delivered: u64, expected: u64) -> Option<f64> {
    (expected > 0).then(|| (delivered as u128 * 100_000 / expected as u128) as f64 / 1000.0)
}
/// What the driver measured around the publishing window.
pub(super) struct Window {
    pub(super) before: super::ServerSample,
    pub(super) s0: super::ServerSample,
    pub(super) s1: super::ServerSample,
    pub(super) r0: f64,
    pub(super) r1: f64,
    pub(super) steal: Vec<f64>,
    pub(super) subscribed: u64,
    pub(super) source_addrs: u32,
    pub(super) drain: f64,
}

pub(super) fn report(
    a: &ChurnDeliveriesArgs,
    c: &crate::cli::Common,
    pres: &publisher::PubResult,
    results: Vec<WorkerResult>,
    w: Window,
) -> Value {
    let published = &pres.per_stream_total;
    let cx = Ctx {
        prefix: c.channel_prefix.as_bytes().to_vec(),
        pubs: a.pubs,
        channels: a.channels,
        t0: 0,
    };
    let mut subs: Vec<Sub> = Vec::new();
    let (mut setup, mut offline_at_end, mut max_frac) = (SetupErrors::default(), 0u64, 0f64);
    for r in results {
        setup.connect += r.setup.connect;
        setup.handshake += r.setup.handshake;
        setup.subscribe += r.setup.subscribe;
        setup.timeouts += r.setup.timeouts;
        offline_at_end += r.offline_at_end;
        max_frac = max_frac.max(r.max_frac);
        subs.extend(r.subs);
    }
    subs.sort_by_key(|s| s.gid);
    let mut cn = Counters::default();
    let (mut expected, mut delivered, mut dups, mut reord) = (0u64, 0u64, 0u64, 0u64);
    let (mut exp_per, mut del_per) = (Vec::new(), Vec::new());
    let mut worst: Option<f64> = None;
    let mut incomplete = 0u64;
    for s in &subs {
        cn.add(&s.c);
        let (e, d) = (s.expected(published), s.delivered());
        expected += e;
        delivered += d;
        dups += s.duplicates();
        reord += s.reordered();
        exp_per.push(e);
        del_per.push(d);
        if d < e {
            incomplete += 1;
        }
        if let Some(r) = ratio_pct(d, e) {
            worst = Some(worst.map_or(r, |w: f64| w.min(r)));
        }
    }
    // The worst subscribers in detail: most lost, then most duplicated / reordered.
    let mut bad: Vec<&Sub> = subs
        .iter()
        .filter(|s| s.delivered() < s.expected(published) || s.duplicates() + s.reordered() > 0)
        .collect();
    bad.sort_by_key(|s| {
        std::cmp::Reverse((
            s.expected(published).saturating_sub(s.delivered()),
            s.duplicates() + s.reordered(),
        ))
    });
    let problems: Vec<Value> = bad
        .iter()
        .take(a.report_subs)
        .map(|s| s.detail(&cx, published))
        .collect();
    let dur = a.duration;
    let server_cpu = match (w.s0.cpu_s, w.s1.cpu_s) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    json!({
        "scenario": "churn-deliveries",
        "url": c.url_list(),
        "urls": c.url,
        "resume": a.resume,
        "subs": a.subs,
        "subscribed": w.subscribed,
        "channels": a.channels,
        "subs_per_conn": a.subs_per_conn,
        "pubs": a.pubs,
        "publish_via": a.publish_via.name(),
        "payload": a.payload,
        "rate": a.rate,
        "duration_s": dur,
        "drop_every_s": a.drop_every,
        "offline_s": if a.offline.min == a.offline.max { json!(a.offline.min) } else { json!([a.offline.min, a.offline.max]) },
        "drain_s": w.drain,
        "seed": a.seed,
        "threads": c.threads.clamp(1, a.subs),
        "source_addrs": w.source_addrs,
        "published": pres.published_total,
        "publish_acks": pres.acked,
        "publish_errors": pres.errors,
        "publish_error_codes": pres.error_codes,
        "publisher_failures": pres.conn_failures,
        "unacked_at_end": pres.outstanding_at_end,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "delivery_ratio_pct": ratio_pct(delivered, expected),
        "worst_sub_ratio_pct": worst,
        "expected_per_sub": spread(&exp_per),
        "delivered_per_sub": spread(&del_per),
        "duplicates": dups,
        "reordered": reord,
        "gaps": cn.gaps,
        "drops": cn.drops,
        "reconnects": cn.reconnects,
        "resubscribes_since": cn.resubscribes_since,
        "resumes_without_offset": cn.resumes_without_offset,
        "reconnect_errors": cn.reconnect_errors,
        "resubscribe_errors": cn.resubscribe_errors,
        "server_closes": cn.server_closes,
        "offline_at_end": offline_at_end,
        "incomplete_subs": incomplete,
        "error_frames": cn.error_frames,
        "foreign_deliveries": cn.foreign,
        "unparsed_frames": cn.unparsed,
        "other_frames": cn.other,
        "setup_errors": setup.connect + setup.handshake + setup.subscribe + setup.timeouts,
        "connect_errors": setup.connect,
        "handshake_errors": setup.handshake,
        "subscribe_errors": setup.subscribe,
        "setup_timeouts": setup.timeouts,
        "server_pids": c.server_pid,
        "server_cpu_s": server_cpu.map(round3),
        "server_cpu_pct": server_cpu.map(|x| round1(x / dur * 100.0)),
        "server_rss_before_kib": w.before.rss_kib,
        "server_rss_kib": w.s1.rss_kib,
        "cpu_steal_pct": w.steal,
        "loadgen_cpu_s": round3(w.r1 - w.r0),
        "loadgen_max_thread_cpu_pct": round1(max_frac.max(pres.window_thread_frac) * 100.0),
        "loadgen_saturated": max_frac.max(pres.window_thread_frac) > SATURATION,
        "problems": problems,
    })
}

/// Human table, plus the detailed subscribers when something is off under --resume
/// (without it every subscriber misses what was sent while it was away).
pub fn print(res: &Value, json_out: bool) {
    if json_out {
        report::emit(res, true, "loadgen churn-deliveries", ROWS);
        return;
    }
    // The table's number format would show 99.999 as "100.00": print ratios with all
    // three decimals, and the per-subscriber spreads on one line.
    let mut t = res.clone();
    for k in ["delivery_ratio_pct", "worst_sub_ratio_pct"] {
        if let Some(v) = res[k].as_f64() {
            t[k] = json!(format!("{v:.3}"));
        }
    }
    for k in ["expected_per_sub", "delivered_per_sub"] {
        if res[k].is_object() {
            t[k] = json!(format!(
                "min {} mean {} max {}",
                res[k]["min"], res[k]["mean"], res[k]["max"]
            ));
        }
    }
    report::emit(&t, false, "loadgen churn-deliveries", ROWS);
    let show = res["resume"] == true
        || res["duplicates"].as_u64().unwrap_or(0) + res["reordered"].as_u64().unwrap_or(0) > 0;
    let Some(p) = res["problems"].as_array().filter(|p| show && !p.is_empty()) else {
        return;
    };
    println!("  subscribers with loss, duplicates or reorders (worst first):");
    for s in p {
        println!(
            "    sub {} {}: expected {} delivered {} lost {} dup {} reordered {} gaps {} drops {}",
            s["sub"],
            s["channels"],
            s["expected"],
            s["delivered"],
            s["lost"],
            s["duplicates"],
            s["reordered"],
            s["gaps"],
            s["drops"]
        );
        for m in s["missing"].as_array().into_iter().flatten() {
            println!(
                "      missing on stream {} ({}): seq ranges {}",
                m["stream"], m["channel"], m["ranges"]
            );
        }
        for d in s["duplicate_seqs"].as_array().into_iter().flatten() {
            println!(
                "      duplicated on stream {}: seqs {}",
                d["stream"], d["seqs"]
            );
        }
        for e in s["events"].as_array().into_iter().flatten().take(60) {
            println!("      {}", e.as_str().unwrap_or(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_never_rounds_a_loss_up_to_100() {
        assert_eq!(ratio_pct(10, 10), Some(100.0));
        assert_eq!(ratio_pct(999_999, 1_000_000), Some(99.999));
        assert_eq!(ratio_pct(9_999_999, 10_000_000), Some(99.999));
        assert_eq!(ratio_pct(87, 100), Some(87.0));
        assert_eq!(ratio_pct(0, 0), None);
    }
}
