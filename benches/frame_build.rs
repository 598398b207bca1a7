//! Building a delivery for S subscribers: fanout's one shared frame (build once, clone a
//! `Bytes` per subscriber) against the baselines of the same run: a copy per subscriber
//! (uWS), and JSON serialization per subscriber (the Node.js seed's
//! `JSON.stringify({channel, data: JSON.parse(message)})` inside the loop).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanout::protocol::envelope::EnvelopeBuilder;
use fanout::ws::frame::{self, OutOp};
use std::hint::black_box;

fn payload() -> Vec<u8> {
    let mut p = br#"{"user":"alice","text":""#.to_vec();
    p.extend(std::iter::repeat_n(b'x', 40));
    p.extend_from_slice(br#"","ts":1700000000000}"#);
    p
}

fn bench(c: &mut Criterion) {
    let payload = payload();
    let mut group = c.benchmark_group("frame_build");
    for subs in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(subs as u64));
        group.bench_with_input(BenchmarkId::new("shared_frame", subs), &subs, |b, &subs| {
            let mut env = EnvelopeBuilder::default();
            let mut out: Vec<Bytes> = Vec::with_capacity(subs);
            b.iter(|| {
                out.clear();
                let frame = env.build_checked("room.42", &payload);
                for _ in 0..subs {
                    out.push(frame.clone());
                }
                black_box(&out);
            })
        });
        group.bench_with_input(
            BenchmarkId::new("copy_per_subscriber", subs),
            &subs,
            |b, &subs| {
                let mut env = EnvelopeBuilder::default();
                let mut out: Vec<Bytes> = Vec::with_capacity(subs);
                b.iter(|| {
                    out.clear();
                    let frame = env.build_checked("room.42", &payload);
                    for _ in 0..subs {
                        out.push(Bytes::copy_from_slice(&frame));
                    }
                    black_box(&out);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serialize_per_subscriber", subs),
            &subs,
            |b, &subs| {
                let mut out: Vec<Bytes> = Vec::with_capacity(subs);
                b.iter(|| {
                    out.clear();
                    for _ in 0..subs {
                        let data: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                        let body = serde_json::to_vec(
                            &serde_json::json!({"channel": "room.42", "data": data}),
                        )
                        .unwrap();
                        out.push(frame::build(OutOp::Text, &body).freeze());
                    }
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
