//! The measurement behind the heartbeat figures in docs/operations.md: records `n`
//! connections (one user each) through the real store code in rounds of the presence
//! thread's batch size, then times one heartbeat round, against a real Redis.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::local::{Entry, Local};
use super::store::{Op, RedisStore};
use super::{now_ms, BATCH};
use crate::metrics::Metrics;
use crate::redis::RedisUrl;

/// What `n` connections cost.
#[derive(Debug)]
pub struct Cost {
    /// Recording all of them (a connect storm).
    pub record: Duration,
    pub record_rounds: usize,
    /// One heartbeat round (liveness key, registration, one EXPIRE per user, sweep).
    pub heartbeat: Duration,
    pub heartbeat_commands: u64,
}

pub fn measure(url: &str, n: usize) -> std::io::Result<Cost> {
    let url = RedisUrl::parse(url)?;
    let metrics = Arc::new(Metrics::new(1));
    let client = crate::redis::BlockingRedis::One(crate::redis::blocking::Client::new(url));
    let mut store = RedisStore::new(client, "bench", "{}".into(), 120, 90_000, metrics.clone());
    let mut local = Local::default();
    store.start(&local);
    let started = Instant::now();
    let mut rounds = 0;
    let now = now_ms();
    let mut i = 0;
    while i < n {
        let mut ops = Vec::with_capacity(BATCH);
        for j in i..(i + BATCH).min(n) {
            let user: Box<str> = format!("bench-{j}").into();
            let cid: Box<str> = format!("bench:0:{j}").into();
            let entry = Entry {
                cid: cid.into(),
                connected_at: now,
            };
            local.insert(&user, entry.clone());
            ops.push(Op::Open { user, entry });
        }
        i += ops.len();
        store.write(ops, &local);
        rounds += 1;
    }
    let record = started.elapsed();
    let commands = metrics.presence.redis_commands.load(Ordering::Relaxed);
    let started = Instant::now();
    store.heartbeat(&local);
    let heartbeat = started.elapsed();
    let heartbeat_commands = metrics.presence.redis_commands.load(Ordering::Relaxed) - commands;
    if metrics.presence.redis_errors.load(Ordering::Relaxed) > 0 {
        return Err(std::io::Error::other("a Redis round failed"));
    }
    Ok(Cost {
        record,
        record_rounds: rounds,
        heartbeat,
        heartbeat_commands,
    })
}
