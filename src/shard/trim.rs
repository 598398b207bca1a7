//! Giving freed heap back to the OS after a burst of connections went idle. Each
//! connection's outbound queue is freed after a quiet second (`OutQueue::release_if_empty`),
//! but glibc keeps freed memory between live chunks in the process (RSS) for good: after
//! 20,000 connections subscribed and went quiet, about a quarter of the node's memory
//! per connection was such free space (docs/benchmarks.md, "idle connections"). Owns the
//! process-wide rate limit of `malloc_trim`; called from the once-a-second tick, never
//! per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::TUNING;

/// When the process last trimmed, in milliseconds since `epoch()` plus one (0: never).
static LAST: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether a tick that freed `released` queues should trim, given the last trim (`None`:
/// never) and `now`: enough was freed at once, and the last trim was long enough ago
/// (the trim walks every arena and a freed page that is used again faults back in).
pub fn due(released: usize, last: Option<Duration>, now: Duration) -> bool {
    released >= TUNING.trim_released
        && last.is_none_or(|l| now.saturating_sub(l) >= TUNING.trim_every)
}

/// After a tick freed `released` outbound queues: trims the heap if due. True if it did.
pub fn after_release(released: usize) -> bool {
    if released < TUNING.trim_released {
        return false;
    }
    let now = epoch().elapsed();
    let last = LAST.load(Ordering::Relaxed);
    let last_at = last.checked_sub(1).map(Duration::from_millis);
    if !due(released, last_at, now) {
        return false;
    }
    let stamp = now.as_millis() as u64 + 1;
    // One shard trims; another that got here at the same moment does not.
    if LAST
        .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    trim();
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes the
    // allocator's own locks and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_burst_and_at_most_once_per_interval() {
        let n = TUNING.trim_released;
        let every = TUNING.trim_every;
        let t = Duration::from_secs(100);
        assert!(due(n, None, t), "a burst, never trimmed");
        assert!(!due(n - 1, None, t), "fewer than a burst");
        assert!(!due(n, Some(t), t + every / 2), "too soon after the last");
        assert!(due(n, Some(t), t + every), "an interval later");
        assert!(
            !due(n, Some(t + every), t),
            "a clock that went back does not trim"
        );
    }
}
