//! One delivery frame fanned out by two shards at once, 500 members each: each shard
//! clones the router's frame per member (one reference count shared across the two
//! cores), against each shard copying the frame once and cloning its own copy, in the
//! same run. Both threads clone and then drop their clones, as a shard queues and later
//! flushes them.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

const MEMBERS: usize = 500;

fn run(iters: u64, copy: bool) -> Duration {
    let frame = Bytes::from(vec![b'x'; 100]);
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (frame, start) = (frame.clone(), start.clone());
            std::thread::spawn(move || {
                let mut queue: Vec<Bytes> = Vec::with_capacity(MEMBERS);
                start.wait();
                for _ in 0..iters {
                    let f = if copy {
                        Bytes::copy_from_slice(&frame)
                    } else {
                        frame.clone()
                    };
                    for _ in 0..MEMBERS {
                        queue.push(f.clone());
                    }
                    queue.clear();
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_shards_500_members");
    g.bench_function("clone_shared", |b| b.iter_custom(|n| run(n, false)));
    g.bench_function("copy_per_shard", |b| b.iter_custom(|n| run(n, true)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
