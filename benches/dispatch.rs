//! Dispatch from the broker thread to shard queues while the shards drain them
//! concurrently (as they do in the server): fanout's `Router` (one frame built, a `Bytes`
//! clone per interested shard over a bounded crossbeam queue, shards woken once per
//! batch) against a baseline of the same run that pushes into one mutex-protected
//! `VecDeque` per shard.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fanout::broker::{Router, ShardLinks};
use fanout::inbox::inbox;
use fanout::metrics::Metrics;
use fanout::protocol::envelope::EnvelopeBuilder;
use mio::{Poll, Token, Waker};

const SHARDS: usize = 2;
const BATCH: u64 = 1000;

/// The baseline's per-shard queue.
type MutexQueue = Arc<Mutex<VecDeque<(Arc<str>, Bytes)>>>;

/// Waits until the consumers have taken `target` messages in total.
fn wait_drained(taken: &AtomicU64, target: u64) {
    while taken.load(Ordering::Acquire) < target {
        std::hint::spin_loop();
    }
}

fn bench(c: &mut Criterion) {
    let stop = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let mut polls = Vec::new();
    let (mut data, mut control) = (vec![], vec![]);
    let mut consumers = Vec::new();
    for _ in 0..SHARDS {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, rx) = inbox(waker.clone(), Some(65_536));
        data.push(tx);
        control.push(inbox(waker, None).0);
        polls.push(poll);
        let (stop, taken) = (stop.clone(), taken.clone());
        consumers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match rx.try_recv() {
                    Some(msg) => {
                        drop(msg);
                        taken.fetch_add(1, Ordering::Release);
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }));
    }
    let links = ShardLinks {
        data,
        control,
        metrics: Arc::new(Metrics::new(SHARDS)),
    };
    let mut links = links;
    let mut router = Router::new(links.metrics.clone());
    for s in 0..SHARDS {
        router.subscribe(
            &mut links,
            "room.42".into(),
            fanout::ids::ShardId::new(s),
            1,
        );
    }
    router.confirmed(&mut links, "room.42");
    let payload = br#"{"user":"alice","text":"hello there","ts":1700000000000}"#;

    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(BATCH));
    let mut sent = 0u64;
    group.bench_function("router_crossbeam", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                router.dispatch(&mut links, "room.42", payload, Some(true), None);
            }
            router.wake(&mut links);
            sent += BATCH * SHARDS as u64;
            wait_drained(&taken, sent);
        })
    });
    stop.store(true, Ordering::Relaxed);
    for t in consumers.drain(..) {
        t.join().unwrap();
    }

    stop.store(false, Ordering::Relaxed);
    taken.store(0, Ordering::Relaxed);
    let queues: Vec<MutexQueue> = (0..SHARDS)
        .map(|_| Arc::new(Mutex::new(VecDeque::new())))
        .collect();
    for q in &queues {
        let (q, stop, taken) = (q.clone(), stop.clone(), taken.clone());
        consumers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let item = q.lock().unwrap().pop_front();
                match item {
                    Some(msg) => {
                        drop(msg);
                        taken.fetch_add(1, Ordering::Release);
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }));
    }
    let channel: Arc<str> = "room.42".into();
    let mut env = EnvelopeBuilder::default();
    let mut sent = 0u64;
    group.bench_function("mutex_vecdeque", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let frame = env.build("room.42", payload, true);
                for q in &queues {
                    q.lock()
                        .unwrap()
                        .push_back((channel.clone(), frame.clone()));
                }
            }
            sent += BATCH * SHARDS as u64;
            wait_drained(&taken, sent);
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    for t in consumers {
        t.join().unwrap();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
