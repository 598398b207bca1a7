//! Clocks: system-wide CLOCK_MONOTONIC (shared by every process on the host, so a
//! timestamp taken by a publisher process is comparable to one taken by a subscriber
//! process) and per-thread CPU time, both in nanoseconds.

fn read(id: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; clock_gettime only writes to it.
    unsafe { libc::clock_gettime(id, &mut t) };
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Sleep until the monotonic clock reaches `t_ns` (returns at once if already past).
pub fn sleep_until(t_ns: u64) {
    let now = now_ns();
    if t_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(t_ns - now));
    }
}

/// Seconds (f64) to nanoseconds.
pub fn secs(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}
