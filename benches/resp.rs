//! RESP decoding of a buffer of pub/sub messages: our zero-copy decoder against
//! redis-rs's parser in the same run.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fanout::redis::resp;
use std::hint::black_box;

fn messages(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = format!("{{\"p\":1,\"s\":123456,\"x\":\"{}\"}}", "a".repeat(40));
    for _ in 0..n {
        out.extend_from_slice(
            format!(
                "*3\r\n$7\r\nmessage\r\n$7\r\nroom.42\r\n${}\r\n{}\r\n",
                payload.len(),
                payload
            )
            .as_bytes(),
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let wire = messages(1000);
    let mut group = c.benchmark_group("resp_decode");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("fanout_resp", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Ok(Some(v)) = resp::decode(&mut buf) {
                black_box(&v);
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
    group.bench_function("redis_rs_parser", |b| {
        b.iter(|| {
            // One parser over one stream: it buffers what it read past each value.
            let mut parser = redis::Parser::new();
            let mut reader: &[u8] = &wire;
            for _ in 0..1000 {
                let v = parser.parse_value(&mut reader).unwrap();
                black_box(&v);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
