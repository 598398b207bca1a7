//! Coordination of a subscriber set: the shared run state that the driver publishes to
//! its worker threads (measured window, drain), and `SubSet`, which runs subscribers
//! either as local threads or as child processes and hides the difference.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::clock::{now_ns, sleep_until};
use crate::procs::Kid;
use crate::stats::SubResult;
use crate::subs::{self, SubPlan};

/// State shared between a driver and its worker threads.
pub struct Control {
    /// Measured window [ws, we) on the monotonic clock; u64::MAX until set.
    pub ws: AtomicU64,
    pub we: AtomicU64,
    /// Set once publishing stopped and `published_per_channel` is final.
    pub finish: AtomicBool,
    pub drain_deadline: AtomicU64,
    pub published_per_channel: Mutex<Vec<u64>>,
    pub abort: AtomicBool,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub subscribed: AtomicU64,
    workers_ready: AtomicUsize,
    setup_errors: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            ws: AtomicU64::new(u64::MAX),
            we: AtomicU64::new(u64::MAX),
            finish: AtomicBool::new(false),
            drain_deadline: AtomicU64::new(u64::MAX),
            published_per_channel: Mutex::new(Vec::new()),
            abort: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            workers_ready: AtomicUsize::new(0),
            setup_errors: AtomicU64::new(0),
        }
    }
}

impl Control {
    pub fn worker_ready(&self, _ok: u64, errors: u64) {
        self.setup_errors.fetch_add(errors, Ordering::Relaxed);
        self.workers_ready.fetch_add(1, Ordering::Release);
    }

    pub fn set_window(&self, ws: u64, we: u64) {
        self.we.store(we, Ordering::Release);
        self.ws.store(ws, Ordering::Release);
    }

    pub fn set_finish(&self, per_channel: &[u64], drain_deadline: u64) {
        if let Ok(mut v) = self.published_per_channel.lock() {
            *v = per_channel.to_vec();
        }
        self.drain_deadline.store(drain_deadline, Ordering::Release);
        self.finish.store(true, Ordering::Release);
    }
}

/// Live counters for progress lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub delivered: u64,
    pub errors: u64,
    pub subscribed: u64,
}

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
                while ctl.workers_ready.load(Ordering::Acquire) < handles.len() {
                    if now_ns() > deadline + 5_000_000_000 {
                        return Err("subscriber workers did not finish setup".into());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok((
                    ctl.subscribed.load(Ordering::Relaxed),
                    ctl.setup_errors.load(Ordering::Relaxed),
                ))
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

    pub fn finish(&mut self, per_channel: &[u64], drain_deadline: u64) -> Result<(), String> {
        match self {
            SubSet::Local { ctl, .. } => {
                ctl.set_finish(per_channel, drain_deadline);
                Ok(())
            }
            SubSet::Remote { kids, .. } => {
                let list: Vec<String> = per_channel.iter().map(|v| v.to_string()).collect();
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
            ProgressHandle::Local(ctl) => Progress {
                delivered: ctl.delivered.load(Ordering::Relaxed),
                errors: ctl.errors.load(Ordering::Relaxed),
                subscribed: ctl.subscribed.load(Ordering::Relaxed),
            },
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
