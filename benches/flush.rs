//! The per-connection flush: fanout's vectored write of queued shared frames against the
//! baselines of the same run: copying them into one buffer and writing that, and one
//! write per frame. Writes go to a real Unix socket drained by another thread.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanout::shard::outq::OutQueue;

fn drained_socket() -> UnixStream {
    let (a, mut b) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    a
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("flush");
    for frames in [1usize, 8, 64] {
        let frame = Bytes::from(vec![b'x'; 100]);
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_with_input(
            BenchmarkId::new("writev_shared", frames),
            &frames,
            |b, &n| {
                let mut sock = drained_socket();
                let mut q = OutQueue::default();
                b.iter(|| {
                    for _ in 0..n {
                        q.push(frame.clone());
                    }
                    while !q.is_empty() {
                        q.write_to(&mut sock).unwrap();
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("copy_then_write", frames),
            &frames,
            |b, &n| {
                let mut sock = drained_socket();
                let mut buf = Vec::new();
                b.iter(|| {
                    buf.clear();
                    for _ in 0..n {
                        buf.extend_from_slice(&frame);
                    }
                    sock.write_all(&buf).unwrap();
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("write_per_frame", frames),
            &frames,
            |b, &n| {
                let mut sock = drained_socket();
                b.iter(|| {
                    for _ in 0..n {
                        sock.write_all(&frame).unwrap();
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
