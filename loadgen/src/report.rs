//! Output: the once-per-second progress ticker on stderr, the human-readable result
//! table, the single-line JSON, and the loadgen-saturation warning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::Value;

use crate::clock::now_ns;

/// Thread CPU / wall fraction above which loadgen itself is the bottleneck.
pub const SATURATION: f64 = 0.9;

/// Prints `f(elapsed_s)` on stderr once per second until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    pub fn start(enabled: bool, f: impl Fn(f64) -> Option<String> + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = enabled.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let t0 = now_ns();
                let mut next = t0 + 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    let now = now_ns();
                    if now >= next {
                        next += 1_000_000_000;
                        if let Some(line) = f((now - t0) as f64 / 1e9) {
                            eprintln!("{line}");
                        }
                    }
                }
            })
        });
        Ticker { stop, handle }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The warning text when loadgen saturated, else None.
pub fn saturation_warning(max_frac: f64) -> Option<String> {
    (max_frac > SATURATION).then(|| {
        format!(
            "WARNING: loadgen saturated: one of its threads used {:.0}% of a core in the \
             measured window; results are capped by loadgen, not the server. \
             Add --threads / --procs (or fewer subscribers per thread).",
            max_frac * 100.0
        )
    })
}

fn fmt_val(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                group(i)
            } else if let Some(f) = n.as_f64() {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else if f.abs() >= 1.0 {
                    format!("{f:.2}")
                } else {
                    format!("{f:.3}")
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Object(o) if o.get("count").and_then(Value::as_u64) == Some(0) => {
            "no samples".into()
        }
        Value::Object(o) if o.contains_key("p50") => format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_val(&o["p50"]),
            fmt_val(&o["p90"]),
            fmt_val(&o["p99"]),
            fmt_val(&o["p999"]),
            fmt_val(&o["max"]),
            fmt_val(&o["count"])
        ),
        other => other.to_string(),
    }
}

/// 1234567 → "1 234 567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Render selected `rows` (json key, label) of `res` as a two-column table.
pub fn table(res: &Value, rows: &[(&str, &str)]) -> String {
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(10);
    let mut out = String::new();
    for (key, label) in rows {
        let Some(v) = res.get(*key) else { continue };
        if v.is_null() {
            continue;
        }
        out.push_str(&format!("  {label:<width$}  {}\n", fmt_val(v)));
    }
    out
}

/// Print the result: JSON line or table, plus warnings on stderr.
pub fn emit(res: &Value, json: bool, title: &str, rows: &[(&str, &str)]) {
    let sat = res
        .get("loadgen_max_thread_cpu_pct")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        / 100.0;
    let warn = saturation_warning(sat);
    if let Some(w) = &warn {
        eprintln!("{w}");
    }
    if json {
        println!("{res}");
        return;
    }
    println!("{title}");
    print!("{}", table(res, rows));
    if let Some(w) = warn {
        println!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(group(1234567), "1 234 567");
        assert_eq!(group(12), "12");
        let v = serde_json::json!({"a": 1234, "b": 0.5, "lat": {"p50": 1.5, "p90": 2, "p99": 3, "p999": 4, "max": 5, "count": 10}});
        let t = table(&v, &[("a", "alpha"), ("lat", "latency"), ("zz", "missing")]);
        assert!(t.contains("alpha"));
        assert!(t.contains("1 234"));
        assert!(t.contains("p99.9 4"));
        assert!(!t.contains("missing"));
        assert!(saturation_warning(0.95).is_some());
        assert!(saturation_warning(0.5).is_none());
    }
}
