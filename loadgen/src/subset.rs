//! A subscriber set: `SubSet` runs the subscriber connections either as worker threads
//! in this process (each running `subs::run`) or as child processes (`child_main` is the
//! child's side of the stdin/stdout line protocol), and hides the difference from the
//! scenarios; `ProgressHandle` reads either kind's live counters. It coordinates only:
//! it never opens a server connection or reads a WebSocket frame (that is `subs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::clock::{now_ns, sleep_until};
use crate::control::{Control, Progress};
use crate::plan::SubPlan;
use crate::procs::Kid;
use crate::stats::SubResult;
use crate::subs;

/// A set of subscriber connections, run in-process or by child processes.
pub enum SubSet {
    Local {
        ctl: Arc<Control>,
        handles: Vec<JoinHandle<SubResult>>,
    },
    Remote {
        kids: Vec<Kid>,
        ready: Vec<(u64, u64)>,
    },
}

impl SubSet {
    /// Start `threads` worker threads over global connection ids `gids`.
    pub fn local(plan: SubPlan, gids: Vec<usize>, threads: usize) -> SubSet {
        let ctl = Arc::new(Control::default());
        let plan = Arc::new(plan);
        let threads = threads.clamp(1, gids.len().max(1));
        let mut shares: Vec<Vec<usize>> = vec![Vec::new(); threads];
        for (i, g) in gids.into_iter().enumerate() {
            shares[i % threads].push(g);
        }
        let per_thread_pending = (plan.max_pending / threads).max(1);
        let handles = shares
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let ctl = ctl.clone();
                let mut p = (*plan).clone();
                p.max_pending = per_thread_pending;
                std::thread::Builder::new()
                    .name(format!("lg-sub-{t}"))
                    .spawn(move || subs::run(Arc::new(p), mine, ctl))
                    .expect("spawn subscriber thread")
            })
            .collect();
        SubSet::Local { ctl, handles }
    }

    pub fn remote(kids: Vec<Kid>) -> SubSet {
        let n = kids.len();
        SubSet::Remote {
            kids,
            ready: vec![(0, 0); n],
        }
    }

    /// Wait until every worker finished connecting and subscribing (each stops by
    /// itself at the setup deadline). Returns (subscribed conns, setup errors).
    pub fn wait_ready(&mut self, deadline: u64) -> Result<(u64, u64), String> {
        match self {
            SubSet::Local { ctl, handles } => {
                while ctl.workers_ready() < handles.len() {
                    if now_ns() > deadline + 5_000_000_000 {
                        return Err("subscriber workers did not finish setup".into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok((ctl.subscribed.load(Ordering::Relaxed), ctl.setup_errors()))
            }
            SubSet::Remote { kids, ready } => {
                for (k, r) in kids.iter_mut().zip(ready.iter_mut()) {
                    let line = k.expect("READY", deadline + 10_000_000_000)?;
                    let mut it = line
                        .split_whitespace()
                        .map(|x| x.parse::<u64>().unwrap_or(0));
                    *r = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                }
                Ok(ready.iter().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1)))
            }
        }
    }

    pub fn go(&mut self, ws: u64, we: u64) -> Result<(), String> {
        match self {
            SubSet::Local { ctl, .. } => {
                ctl.set_window(ws, we);
                Ok(())
            }
            SubSet::Remote { kids, .. } => {
                for k in kids {
                    k.send(&format!("GO {ws} {we}"))?;
                }
                Ok(())
            }
        }
    }

    /// Publishing is over: `published` is `drain::flatten` of what each stream got;
    /// workers drain until their streams are complete or `drain_deadline`.
    pub fn finish(&mut self, published: &[u64], drain_deadline: u64) -> Result<(), String> {
        match self {
            SubSet::Local { ctl, .. } => {
                ctl.set_finish(published, drain_deadline);
                Ok(())
            }
            SubSet::Remote { kids, .. } => {
                let list: Vec<String> = published.iter().map(|v| v.to_string()).collect();
                let list = if list.is_empty() {
                    "-".to_string()
                } else {
                    list.join(",")
                };
                for k in kids {
                    k.send(&format!("FIN {drain_deadline} {list}"))?;
                }
                Ok(())
            }
        }
    }

    pub fn abort(&mut self) {
        match self {
            SubSet::Local { ctl, .. } => ctl.abort.store(true, Ordering::Relaxed),
            SubSet::Remote { kids, .. } => {
                for k in kids {
                    k.kill();
                }
            }
        }
    }

    /// Collect and merge all results.
    pub fn join(self, deadline: u64) -> Result<SubResult, String> {
        let mut total = SubResult::default();
        match self {
            SubSet::Local { handles, .. } => {
                for h in handles {
                    let r = h
                        .join()
                        .map_err(|_| "subscriber thread panicked".to_string())?;
                    total.merge(&r);
                }
            }
            SubSet::Remote { kids, .. } => {
                for mut k in kids {
                    let line = k.expect("RESULT", deadline)?;
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .map_err(|e| format!("bad child result: {e}"))?;
                    total.merge(&SubResult::from_json(&v));
                    k.wait();
                }
            }
        }
        Ok(total)
    }
}

/// Child-process side of a remote subscriber set: run the local share and talk to the
/// parent over stdin/stdout lines.
pub fn child_main(plan: SubPlan, gids: Vec<usize>, threads: usize) -> Result<(), String> {
    use std::io::BufRead;
    let deadline = plan.setup_deadline;
    let mut set = SubSet::local(plan, gids, threads);
    let ctl = match &set {
        SubSet::Local { ctl, .. } => ctl.clone(),
        SubSet::Remote { .. } => return Err("child must run locally".into()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let prog = {
        let (ctl, stop) = (ctl.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(500));
                println!(
                    "PROG {} {} {}",
                    ctl.delivered.load(Ordering::Relaxed),
                    ctl.errors.load(Ordering::Relaxed),
                    ctl.subscribed.load(Ordering::Relaxed)
                );
            }
        })
    };
    let (ok, errs) = set.wait_ready(deadline)?;
    println!("READY {ok} {errs}");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next = |want: &str| -> Result<String, String> {
        loop {
            let l = lines
                .next()
                .ok_or("parent went away")?
                .map_err(|e| e.to_string())?;
            if let Some(rest) = l.strip_prefix(want) {
                return Ok(rest.trim().to_string());
            }
        }
    };
    let go = next("GO")?;
    let mut it = go.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    let (ws, we) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    set.go(ws, we)?;
    sleep_until(ws);
    let c0 = crate::procstat::self_cpu_s();
    sleep_until(we);
    let c1 = crate::procstat::self_cpu_s();
    let fin = next("FIN")?;
    let mut parts = fin.split_whitespace();
    let drain: u64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let per: Vec<u64> = parts
        .next()
        .unwrap_or("-")
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect();
    set.finish(&per, drain)?;
    let mut res = set.join(u64::MAX)?;
    res.process_cpu_s = c1 - c0;
    stop.store(true, Ordering::Relaxed);
    let _ = prog.join();
    println!("RESULT {}", res.to_json());
    Ok(())
}

/// A cloneable view of a subscriber set's live counters, for the progress ticker.
#[derive(Clone)]
pub enum ProgressHandle {
    Local(Arc<Control>),
    Remote(Vec<Arc<[AtomicU64; 3]>>),
}

impl ProgressHandle {
    pub fn get(&self) -> Progress {
        match self {
            ProgressHandle::Local(ctl) => ctl.progress(),
            ProgressHandle::Remote(v) => v.iter().fold(Progress::default(), |mut p, a| {
                p.delivered += a[0].load(Ordering::Relaxed);
                p.errors += a[1].load(Ordering::Relaxed);
                p.subscribed += a[2].load(Ordering::Relaxed);
                p
            }),
        }
    }
}

impl SubSet {
    pub fn progress_handle(&self) -> ProgressHandle {
        match self {
            SubSet::Local { ctl, .. } => ProgressHandle::Local(ctl.clone()),
            SubSet::Remote { kids, .. } => {
                ProgressHandle::Remote(kids.iter().map(|k| k.progress_arc()).collect())
            }
        }
    }
}
