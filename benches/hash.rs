//! The per-message channel lookup (router routes, shard channel index): a map of 10,000
//! channel names looked up by name, with the standard library's SipHash-1-3 against the
//! `fanout::hash::FastMap` (foldhash) the hot path uses, in the same run.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fanout::hash::{fast_map, FastMap};

const CHANNELS: usize = 10_000;

fn names() -> Vec<Arc<str>> {
    (0..CHANNELS)
        .map(|i| Arc::from(format!("room:{i}:events")))
        .collect()
}

fn bench(c: &mut Criterion) {
    let names = names();
    let mut sip: HashMap<Arc<str>, u32> = HashMap::new();
    let mut fast: FastMap<Arc<str>, u32> = fast_map();
    for (i, n) in names.iter().enumerate() {
        sip.insert(n.clone(), i as u32);
        fast.insert(n.clone(), i as u32);
    }
    // Look-ups by a name that is not the key's allocation, as a decoded message is.
    let probes: Vec<String> = names.iter().step_by(7).map(|n| n.to_string()).collect();
    let mut g = c.benchmark_group("channel_lookup");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("siphash", |b| {
        b.iter(|| {
            for p in &probes {
                black_box(sip.get(p.as_str()));
            }
        })
    });
    g.bench_function("foldhash", |b| {
        b.iter(|| {
            for p in &probes {
                black_box(fast.get(p.as_str()));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
