//! Run control shared by a driver and its subscriber workers: `Control` (the measured
//! window, the finish/drain signal, abort, live counters) and `Progress` (a snapshot of
//! those counters). Plain atomics and one mutex only: it never spawns, never does I/O,
//! and imports no other loadgen module.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// State shared between a driver and its worker threads.
pub struct Control {
    /// Measured window [ws, we) on the monotonic clock; u64::MAX until set.
    pub ws: AtomicU64,
    pub we: AtomicU64,
    /// Set once publishing stopped and `published` is final.
    pub finish: AtomicBool,
    pub drain_deadline: AtomicU64,
    /// What was published, per stream, flattened (`drain::flatten`: lo, hi, total).
    pub published: Mutex<Vec<u64>>,
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
            published: Mutex::new(Vec::new()),
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

    pub fn set_finish(&self, published: &[u64], drain_deadline: u64) {
        if let Ok(mut v) = self.published.lock() {
            *v = published.to_vec();
        }
        self.drain_deadline.store(drain_deadline, Ordering::Release);
        self.finish.store(true, Ordering::Release);
    }

    /// Number of workers that called `worker_ready`.
    pub fn workers_ready(&self) -> usize {
        self.workers_ready.load(Ordering::Acquire)
    }

    /// Setup errors summed over the workers that called `worker_ready`.
    pub fn setup_errors(&self) -> u64 {
        self.setup_errors.load(Ordering::Relaxed)
    }

    /// The live counters, for progress lines.
    pub fn progress(&self) -> Progress {
        Progress {
            delivered: self.delivered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
        }
    }
}

/// Live counters for progress lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub delivered: u64,
    pub errors: u64,
    pub subscribed: u64,
}
