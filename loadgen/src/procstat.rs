//! Process accounting: CPU time and RSS of server processes from /proc/PID/{stat,status},
//! and loadgen's own CPU through getrusage.

/// Clock ticks per second for /proc/PID/stat times.
fn ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime of `pid` in seconds (None if the process is gone or unreadable).
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' fields start at #3 (state); utime is #14, stime #15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
}

/// VmRSS of `pid` in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sum over several pids; None if any is unreadable or the list is empty.
pub fn sum_cpu_s(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| proc_cpu_s(p)).sum()
}

pub fn sum_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| proc_rss_kib(p)).sum()
}

/// User+system CPU seconds of this whole process (all threads).
pub fn self_cpu_s() -> f64 {
    // SAFETY: rusage is plain data; getrusage writes into it.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(proc_cpu_s(me).is_some());
        assert!(proc_rss_kib(me).unwrap_or(0) > 0);
        assert!(sum_cpu_s(&[]).is_none());
        assert!(proc_cpu_s(u32::MAX).is_none());
        assert!(self_cpu_s() >= 0.0);
    }
}
