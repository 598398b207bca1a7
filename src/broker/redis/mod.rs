//! Cluster mode through Redis pub/sub: a reader that owns the SUBSCRIBE connection and
//! the routing table, and a writer that pipelines PUBLISHes. Both are state machines
//! over our own RESP codec (see docs/architecture.md for why not redis-rs), driven by
//! a mio loop of their own thread or by shard 0's loop (`driver`); neither ever blocks
//! on a shard or on Redis.

pub mod driver;
pub mod history;
pub mod reader;
pub mod turn;
pub mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Token, Waker};

use super::{BrokerHandle, ShardLinks};
use crate::config::Config;
use crate::health::Health;
use crate::inbox::{counted, inbox};
use crate::redis::RedisUrl;
pub use driver::Inline;

/// Capacity of the writer's publish queue and the reader's command queue.
/// See `config::Tuning`.
pub const QUEUE: usize = crate::config::TUNING.broker_queue;

pub(crate) const WAKER: Token = Token(0);
pub(crate) const LINK: Token = Token(1);

/// Capacity of the reader's command queue: `QUEUE`, or `FANOUT_TEST_READER_QUEUE` (a
/// test knob, so a test can fill it and see what a full queue does to unsubscribes).
fn reader_queue() -> usize {
    std::env::var("FANOUT_TEST_READER_QUEUE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(QUEUE)
}

/// The running Redis broker.
pub struct Started {
    pub handle: BrokerHandle,
    pub threads: Vec<JoinHandle<()>>,
    /// Stops both threads (after the shards are gone).
    pub stop: Box<dyn FnOnce() + Send>,
    /// The reader and writer for shard 0's loop, when they run inline (no threads).
    pub inline: Option<Inline>,
}

/// Shard 0's `Poll`, as the inline reader and writer need it: a handle of its registry
/// (their links register there) and its waker (the other shards wake it through their
/// inboxes).
pub struct OnShard {
    pub registry: mio::Registry,
    pub waker: Arc<Waker>,
}

/// Starts the reader and writer for `url`: on threads of their own, or, given `on`,
/// as state machines for shard 0's loop (`Started::inline`, no threads).
pub fn start(
    url: &str,
    config: &Arc<Config>,
    links: ShardLinks,
    health: Arc<Health>,
    on: Option<OnShard>,
) -> std::io::Result<Started> {
    let url = RedisUrl::parse_with(url, &config.redis_tls)?;
    if url.tls.as_ref().is_some_and(|t| !t.verified()) {
        health
            .tls_unverified
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let inline = on.is_some();
    // Own threads: a Poll and a waker each. Inline: shard 0's, with distinct tokens.
    let (polls, reader_reg, writer_reg, reader_waker, writer_waker) = match on {
        Some(on) => {
            let writer_reg = on.registry.try_clone()?;
            (None, on.registry, writer_reg, on.waker.clone(), on.waker)
        }
        None => {
            let reader_poll = Poll::new()?;
            let reader_waker = Arc::new(Waker::new(reader_poll.registry(), WAKER)?);
            let writer_poll = Poll::new()?;
            let writer_waker = Arc::new(Waker::new(writer_poll.registry(), WAKER)?);
            let reader_reg = reader_poll.registry().try_clone()?;
            let writer_reg = writer_poll.registry().try_clone()?;
            let polls = Some((reader_poll, writer_poll));
            (polls, reader_reg, writer_reg, reader_waker, writer_waker)
        }
    };
    let (reader_token, writer_token) = if inline {
        (driver::INLINE_READER, driver::INLINE_WRITER)
    } else {
        (LINK, LINK)
    };
    let wakes = links.metrics.writer_wakeups.clone();
    let (writer_tx, writer_rx) = counted(writer_waker.clone(), Some(QUEUE), wakes);
    let (reader_tx, reader_rx) = inbox(reader_waker.clone(), Some(reader_queue()));
    let writer = writer::Writer::new(
        writer_reg,
        writer_token,
        url.clone(),
        links.clone(),
        health.clone(),
        config.clone(),
    );
    let reader = reader::Reader::new(
        reader_reg,
        reader_token,
        url,
        links,
        health,
        writer_tx.clone(),
        config.server_id.clone(),
        config.limits.max_message,
    );
    let handle = BrokerHandle::redis(reader_tx, writer_tx);
    let Some((reader_poll, writer_poll)) = polls else {
        return Ok(Started {
            handle,
            threads: Vec::new(),
            stop: Box::new(|| {}),
            inline: Some(Inline::new(reader, writer, reader_rx, writer_rx)),
        });
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (reader_stop, writer_stop) = (stop.clone(), stop.clone());
    let threads = vec![
        std::thread::Builder::new()
            .name("fanout-redis-reader".into())
            .spawn(move || driver::run(reader, reader_poll, reader_rx, reader_stop))?,
        std::thread::Builder::new()
            .name("fanout-redis-writer".into())
            .spawn(move || driver::run(writer, writer_poll, writer_rx, writer_stop))?,
    ];
    let stop_fn = move || {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = reader_waker.wake();
        let _ = writer_waker.wake();
    };
    Ok(Started {
        handle,
        threads,
        stop: Box::new(stop_fn),
        inline: None,
    })
}

/// Mirrors a refusal (or acceptance) of our Redis credentials, and a failed (or
/// succeeding) TLS handshake, seen by `link`, into `/healthz` and the counters (the
/// reader and the writer each call it for their link).
pub(crate) fn note_auth(
    link: &mut crate::redis::link::Link,
    health: &Health,
    metrics: &crate::metrics::Metrics,
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let mirror = |change: Option<bool>, flag: &AtomicBool, counter: &AtomicU64| {
        if let Some(bad) = change {
            flag.store(bad, Relaxed);
            if bad {
                counter.fetch_add(1, Relaxed);
            }
        }
    };
    mirror(
        link.auth_change(),
        &health.auth_refused,
        &metrics.redis_auth_refused,
    );
    mirror(
        link.tls_change(),
        &health.tls_failed,
        &metrics.redis_tls_failed,
    );
}
