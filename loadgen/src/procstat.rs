//! Process accounting: CPU time and RSS of server processes from /proc/PID/{stat,status},
//! loadgen's own CPU through getrusage, and the machine's per-core steal time from
//! /proc/stat (on a VM: time the host ran something else while a core had work).

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

/// Cumulative (steal, total) ticks of each core, from /proc/stat (empty if unreadable).
pub fn cpu_steal_ticks() -> Vec<(u64, u64)> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    parse_cpu_steal(&s)
}

fn parse_cpu_steal(stat: &str) -> Vec<(u64, u64)> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            // cpuN user nice system idle iowait irq softirq steal guest guest_nice
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            (f.get(7).copied().unwrap_or(0), f.iter().sum())
        })
        .collect()
}

/// Steal per core in percent between two `cpu_steal_ticks` readings.
pub fn steal_pct(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(&(s0, t0), &(s1, t1))| {
            let dt = t1.saturating_sub(t0);
            if dt == 0 {
                0.0
            } else {
                (s1.saturating_sub(s0) as f64 * 1000.0 / dt as f64).round() / 10.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_per_core() {
        let a = "cpu  10 0 10 100 0 0 0 5 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 5 0 0\nintr 1\n";
        let b = "cpu  20 0 20 200 0 0 0 25 0 0\ncpu0 10 0 10 100 0 0 0 0 0 0\ncpu1 10 0 10 100 0 0 0 25 0 0\n";
        let (a, b) = (parse_cpu_steal(a), parse_cpu_steal(b));
        assert_eq!(a, vec![(0, 60), (5, 65)]);
        // core 1: 20 of 80 ticks stolen.
        assert_eq!(steal_pct(&a, &b), vec![0.0, 25.0]);
        assert!(!cpu_steal_ticks().is_empty());
    }

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
