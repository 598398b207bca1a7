//! Dispatch from the broker thread to shard queues: fanout's `Router` (one frame built,
//! a `Bytes` clone per interested shard over crossbeam, woken only if parked) against a
//! baseline of the same run that hands each shard a mutex-protected queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fanout::broker::{Router, ShardLinks, ShardMsg};
use fanout::metrics::Metrics;
use fanout::protocol::envelope::EnvelopeBuilder;
use fanout::shard::inbox::{inbox, Inbox};
use mio::{Poll, Token, Waker};

const SHARDS: usize = 2;
const BATCH: usize = 1000;

/// The baseline's per-shard queue.
type MutexQueue = Arc<Mutex<VecDeque<(Arc<str>, Bytes)>>>;

fn bench(c: &mut Criterion) {
    let mut polls = Vec::new();
    let (mut data, mut control, mut rx): (Vec<_>, Vec<_>, Vec<Inbox<ShardMsg>>) =
        (vec![], vec![], vec![]);
    for _ in 0..SHARDS {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, r) = inbox(waker.clone(), Some(65_536));
        data.push(tx);
        rx.push(r);
        control.push(inbox(waker, None).0);
        polls.push(poll);
    }
    let links = ShardLinks {
        data,
        control,
        metrics: Arc::new(Metrics::new(SHARDS)),
    };
    let mut router = Router::new(links);
    for s in 0..SHARDS {
        router.subscribe("room.42".into(), s, 1);
    }
    router.confirmed("room.42");
    let payload = br#"{"user":"alice","text":"hello there","ts":1700000000000}"#;

    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("router_crossbeam", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                router.dispatch("room.42", payload, Some(true));
            }
            router.wake();
            for r in &rx {
                while r.try_recv().is_some() {}
            }
        })
    });
    let queues: Vec<MutexQueue> = (0..SHARDS)
        .map(|_| Arc::new(Mutex::new(VecDeque::new())))
        .collect();
    let channel: Arc<str> = "room.42".into();
    let mut env = EnvelopeBuilder::default();
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
            for q in &queues {
                q.lock().unwrap().clear();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
