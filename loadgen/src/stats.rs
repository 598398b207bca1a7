//! Measurement containers: latency histograms (hdrhistogram, nanoseconds), per-stream
//! delivery counters, per-worker results, their merging, and their JSON form (used to
//! ship results from child processes to the parent).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latency histogram in nanoseconds, 1 ns .. 1 hour, 3 significant digits.
#[derive(Clone)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    pub fn new() -> Hist {
        // Bounds are constants that hdrhistogram accepts.
        Hist(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"))
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    pub fn merge(&mut self, o: &Hist) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&o.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Compact JSON: `[[value, count], ...]` over recorded buckets.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter_recorded()
                .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
                .collect(),
        )
    }

    pub fn from_json(v: &Value) -> Hist {
        let mut h = Hist::new();
        for pair in v.as_array().into_iter().flatten() {
            if let (Some(val), Some(cnt)) = (
                pair.get(0).and_then(Value::as_u64),
                pair.get(1).and_then(Value::as_u64),
            ) {
                let _ = h.0.record_n(val.clamp(1, h.0.high()), cnt);
            }
        }
        h
    }

    /// Percentile summary in microseconds.
    pub fn summary_us(&self) -> Value {
        let h = &self.0;
        let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
        if h.is_empty() {
            return json!({"count":0});
        }
        json!({
            "count": h.len(),
            "min": us(h.min()),
            "p50": us(h.value_at_quantile(0.50)),
            "p90": us(h.value_at_quantile(0.90)),
            "p99": us(h.value_at_quantile(0.99)),
            "p999": us(h.value_at_quantile(0.999)),
            "max": us(h.max()),
            "mean": us(h.mean() as u64),
        })
    }
}

/// Counters for one stream (publisher × channel), as seen by subscribers, counting only
/// messages published inside the measured window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamRecv {
    /// Distinct messages received (summed over subscribers).
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Not received when draining stopped at its deadline, and nothing later on the
    /// stream received either (`drain::in_flight`): not counted as lost.
    pub in_flight: u64,
}

/// Result of one subscriber worker thread (or, merged, of a whole process).
#[derive(Clone, Default)]
pub struct SubResult {
    /// Receive time minus intended send time (t0 + k/rate at a fixed rate).
    pub latency: Hist,
    /// Receive time minus actual send time.
    pub latency_actual: Hist,
    pub connect_latency: Hist,
    pub subscribe_latency: Hist,
    pub streams: Vec<StreamRecv>,
    pub subscribed_per_channel: Vec<u64>,
    /// Subscribed connections per `--url` (index = URL position).
    pub per_url_subscribed: Vec<u64>,
    pub conns_ok: u64,
    pub delivered_total: u64,
    pub delivered_window: u64,
    pub bytes_window: u64,
    /// Bytes the window's deliveries took on the wire (frame headers included,
    /// compressed when permessage-deflate was agreed).
    pub wire_bytes_window: u64,
    pub connect_errors: u64,
    pub handshake_errors: u64,
    pub subscribe_errors: u64,
    pub setup_timeouts: u64,
    pub disconnects: u64,
    pub error_frames: u64,
    pub gap_frames: u64,
    pub foreign: u64,
    pub other_frames: u64,
    pub unparsed: u64,
    /// CPU seconds of worker threads inside the measured window.
    pub window_cpu_s: f64,
    /// Highest CPU/wall fraction of any worker thread inside the measured window.
    pub window_max_thread_frac: f64,
    /// Same for the connect/subscribe phase.
    pub setup_cpu_s: f64,
    pub setup_max_thread_frac: f64,
    /// Process CPU (getrusage) over the measured window, for child processes.
    pub process_cpu_s: f64,
    pub threads: u64,
}

fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl SubResult {
    pub fn merge(&mut self, o: &SubResult) {
        self.latency.merge(&o.latency);
        self.latency_actual.merge(&o.latency_actual);
        self.connect_latency.merge(&o.connect_latency);
        self.subscribe_latency.merge(&o.subscribe_latency);
        if self.streams.len() < o.streams.len() {
            self.streams.resize(o.streams.len(), StreamRecv::default());
        }
        for (a, b) in self.streams.iter_mut().zip(&o.streams) {
            a.received += b.received;
            a.duplicates += b.duplicates;
            a.reordered += b.reordered;
            a.in_flight += b.in_flight;
        }
        add_vec(&mut self.subscribed_per_channel, &o.subscribed_per_channel);
        add_vec(&mut self.per_url_subscribed, &o.per_url_subscribed);
        self.conns_ok += o.conns_ok;
        self.delivered_total += o.delivered_total;
        self.delivered_window += o.delivered_window;
        self.bytes_window += o.bytes_window;
        self.wire_bytes_window += o.wire_bytes_window;
        self.connect_errors += o.connect_errors;
        self.handshake_errors += o.handshake_errors;
        self.subscribe_errors += o.subscribe_errors;
        self.setup_timeouts += o.setup_timeouts;
        self.disconnects += o.disconnects;
        self.error_frames += o.error_frames;
        self.gap_frames += o.gap_frames;
        self.foreign += o.foreign;
        self.other_frames += o.other_frames;
        self.unparsed += o.unparsed;
        self.window_cpu_s += o.window_cpu_s;
        self.window_max_thread_frac = self.window_max_thread_frac.max(o.window_max_thread_frac);
        self.setup_cpu_s += o.setup_cpu_s;
        self.setup_max_thread_frac = self.setup_max_thread_frac.max(o.setup_max_thread_frac);
        self.process_cpu_s += o.process_cpu_s;
        self.threads += o.threads;
    }

    pub fn setup_errors(&self) -> u64 {
        self.connect_errors + self.handshake_errors + self.subscribe_errors + self.setup_timeouts
    }

    pub fn to_json(&self) -> Value {
        let st: Vec<Value> = self
            .streams
            .iter()
            .map(|s| json!([s.received, s.duplicates, s.reordered, s.in_flight]))
            .collect();
        json!({
            "latency": self.latency.to_json(),
            "latency_actual": self.latency_actual.to_json(),
            "connect_latency": self.connect_latency.to_json(),
            "subscribe_latency": self.subscribe_latency.to_json(),
            "streams": st,
            "subscribed_per_channel": self.subscribed_per_channel,
            "per_url_subscribed": self.per_url_subscribed,
            "conns_ok": self.conns_ok,
            "delivered_total": self.delivered_total,
            "delivered_window": self.delivered_window,
            "bytes_window": self.bytes_window,
            "wire_bytes_window": self.wire_bytes_window,
            "connect_errors": self.connect_errors,
            "handshake_errors": self.handshake_errors,
            "subscribe_errors": self.subscribe_errors,
            "setup_timeouts": self.setup_timeouts,
            "disconnects": self.disconnects,
            "error_frames": self.error_frames,
            "gap_frames": self.gap_frames,
            "foreign": self.foreign,
            "other_frames": self.other_frames,
            "unparsed": self.unparsed,
            "window_cpu_s": self.window_cpu_s,
            "window_max_thread_frac": self.window_max_thread_frac,
            "setup_cpu_s": self.setup_cpu_s,
            "setup_max_thread_frac": self.setup_max_thread_frac,
            "process_cpu_s": self.process_cpu_s,
            "threads": self.threads,
        })
    }

    pub fn from_json(v: &Value) -> SubResult {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let streams = v
            .get("streams")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let g = |i: usize| s.get(i).and_then(Value::as_u64).unwrap_or(0);
                        StreamRecv {
                            received: g(0),
                            duplicates: g(1),
                            reordered: g(2),
                            in_flight: g(3),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let uvec = |k: &str| -> Vec<u64> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        let spc = uvec("subscribed_per_channel");
        let h = |k: &str| v.get(k).map(Hist::from_json).unwrap_or_default();
        SubResult {
            latency: h("latency"),
            latency_actual: h("latency_actual"),
            connect_latency: h("connect_latency"),
            subscribe_latency: h("subscribe_latency"),
            streams,
            subscribed_per_channel: spc,
            per_url_subscribed: uvec("per_url_subscribed"),
            conns_ok: u("conns_ok"),
            delivered_total: u("delivered_total"),
            delivered_window: u("delivered_window"),
            bytes_window: u("bytes_window"),
            wire_bytes_window: u("wire_bytes_window"),
            connect_errors: u("connect_errors"),
            handshake_errors: u("handshake_errors"),
            subscribe_errors: u("subscribe_errors"),
            setup_timeouts: u("setup_timeouts"),
            disconnects: u("disconnects"),
            error_frames: u("error_frames"),
            gap_frames: u("gap_frames"),
            foreign: u("foreign"),
            other_frames: u("other_frames"),
            unparsed: u("unparsed"),
            window_cpu_s: f("window_cpu_s"),
            window_max_thread_frac: f("window_max_thread_frac"),
            setup_cpu_s: f("setup_cpu_s"),
            setup_max_thread_frac: f("setup_max_thread_frac"),
            process_cpu_s: f("process_cpu_s"),
            threads: u("threads"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_json_roundtrip_and_merge() {
        let mut h = Hist::new();
        for v in [1000u64, 2000, 2000, 5_000_000] {
            h.record(v);
        }
        let back = Hist::from_json(&h.to_json());
        assert_eq!(back.count(), 4);
        assert_eq!(back.0.value_at_quantile(0.5), h.0.value_at_quantile(0.5));
        assert_eq!(back.0.max(), h.0.max());
        let mut r = SubResult::default();
        let o = SubResult {
            latency: h,
            streams: vec![StreamRecv {
                received: 3,
                duplicates: 1,
                reordered: 2,
                in_flight: 5,
            }],
            subscribed_per_channel: vec![1, 2],
            per_url_subscribed: vec![3, 0, 1],
            window_max_thread_frac: 0.5,
            ..Default::default()
        };
        let o2 = SubResult::from_json(&o.to_json());
        r.merge(&o2);
        r.merge(&o2);
        assert_eq!(r.latency.count(), 8);
        assert_eq!(r.streams[0].received, 6);
        assert_eq!(r.streams[0].reordered, 4);
        assert_eq!(r.streams[0].in_flight, 10);
        assert_eq!(r.subscribed_per_channel, vec![2, 4]);
        assert_eq!(r.per_url_subscribed, vec![6, 0, 2]);
        assert_eq!(r.window_max_thread_frac, 0.5);
    }
}
