//! Client command parsing: fanout's borrowed parse (the `data` kept as raw bytes) against
//! parsing into a `serde_json::Value` tree, in the same run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let text = r#"{"type":"publish","channel":"room.42","data":{"user":"alice","text":"hello there, how are you","tags":[1,2,3],"ts":1700000000000},"id":17}"#;
    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("fanout_borrowed", |b| {
        b.iter(|| black_box(fanout::protocol::parse_command(black_box(text), 256).is_ok()))
    });
    group.bench_function("serde_value_tree", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(text)).unwrap();
            black_box(v["type"].as_str() == Some("publish"))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
