//! Scenario drivers (`fanout`, `conns`, `churn`, `churn-deliveries`) and what they share: process-count
//! resolution, server CPU/RSS sampling and validation helpers.

pub mod churn;
pub mod churn_deliveries;
mod churn_deliveries_frame;
mod churn_deliveries_report;
mod churn_deliveries_sub;
mod churn_deliveries_worker;
mod churn_worker;
pub mod conns;
pub mod fanout;

use crate::procstat;

/// Open files one process may use for connections (the machine caps at 20k).
pub fn per_proc_capacity() -> usize {
    let lim = crate::net::raise_nofile() as usize;
    lim.saturating_sub(200).max(100)
}

/// Processes to use: `requested`, or (0) enough that each stays under its fd limit.
pub fn resolve_procs(requested: usize, conns: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    conns.div_ceil(per_proc_capacity() * 95 / 100).max(1)
}

/// Server-side sample: summed CPU seconds and RSS of the given pids.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    pub cpu_s: Option<f64>,
    pub rss_kib: Option<u64>,
}

pub fn sample(pids: &[u32]) -> ServerSample {
    ServerSample {
        cpu_s: procstat::sum_cpu_s(pids),
        rss_kib: procstat::sum_rss_kib(pids),
    }
}

/// Which share of `total` connection ids this process owns (all, or i of n).
pub fn my_ids(total: usize, child: Option<(usize, usize)>) -> Vec<usize> {
    match child {
        None => (0..total).collect(),
        Some((i, n)) => (0..total).filter(|g| g % n == i).collect(),
    }
}

/// `per_url_conns` for the JSON: subscribed connections per URL, one entry per URL.
pub fn per_url_conns(counts: &[u64], n_urls: usize) -> Vec<u64> {
    let mut v = counts.to_vec();
    v.resize(n_urls.max(1), 0);
    v
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
