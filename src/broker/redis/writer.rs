//! The Redis writer thread: takes publishes from every shard, pipelines them as PUBLISH
//! commands on its own connection, and matches each reply to the publish that asked for
//! an ack. While Redis is down or too slow, publishes are refused at once (`unavailable`)
//! rather than queued without bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::LINK;
use crate::broker::{AckTo, BrokerCmd, ShardLinks};
use crate::health::Health;
use crate::inbox::Inbox;
use crate::protocol::ErrorCode;
use crate::redis::link::{Link, LinkEvent};
use crate::redis::resp::{self, Value};
use crate::redis::RedisUrl;

/// Bytes of unsent commands beyond which publishes are refused (Redis is not keeping up).
/// See `config::Tuning`.
const MAX_UNSENT: usize = crate::config::TUNING.max_unsent;
/// A reply later than this means the connection is stuck: fail and reconnect.
/// See `config::Tuning`.
const REPLY_TIMEOUT: Duration = crate::config::TUNING.reply_timeout;

pub struct Writer {
    poll: Poll,
    inbox: Inbox<BrokerCmd>,
    link: Link,
    links: ShardLinks,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    /// One entry per PUBLISH sent, oldest first: who wants the reply, whether it is a
    /// client's publish (not the node's probe), and when it was sent.
    pending: VecDeque<(Option<AckTo>, bool, Instant)>,
}

impl Writer {
    pub fn new(
        poll: Poll,
        inbox: Inbox<BrokerCmd>,
        url: RedisUrl,
        links: ShardLinks,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
    ) -> Writer {
        Writer {
            poll,
            inbox,
            link: Link::new(url, LINK, "writer"),
            links,
            health,
            stop,
            pending: VecDeque::new(),
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut timeout = self.link.timeout(now).unwrap_or(Duration::from_millis(500));
            if !self.inbox.park() {
                timeout = Duration::ZERO;
            }
            let _ = self
                .poll
                .poll(&mut events, Some(timeout.min(Duration::from_millis(500))));
            self.inbox.unpark();
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == LINK {
                    let ev = self.link.on_ready(self.poll.registry(), now);
                    self.on_link_event(ev);
                }
            }
            let ev = self.link.maintain(self.poll.registry(), now);
            self.on_link_event(ev);
            self.read_replies(now);
            super::note_auth(&mut self.link, &self.health, &self.links.metrics);
            self.drain_inbox(now);
            if self.link.is_up() && self.link.flush().is_err() {
                self.lost(now);
            }
            self.check_stuck(now);
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                if self.link.was_up {
                    self.links
                        .metrics
                        .broker_reconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.link.was_up = true;
                self.health.publisher_ok.store(true, Ordering::Relaxed);
            }
            LinkEvent::Lost => self.fail_pending(),
            LinkEvent::Nothing => {}
        }
    }

    fn lost(&mut self, now: Instant) {
        self.link.disconnect(self.poll.registry(), now);
        self.fail_pending();
    }

    /// The connection is gone: every PUBLISH buffered or in flight on it is lost (or at
    /// least unconfirmed). Those with an id are answered (the shard counts the failure);
    /// those without are counted here.
    fn fail_pending(&mut self) {
        self.health.publisher_ok.store(false, Ordering::Relaxed);
        let mut lost = 0u64;
        for (ack, client, _) in self.pending.drain(..) {
            match ack {
                Some(ack) => self.links.ack(ack, Err(ErrorCode::Unavailable)),
                None if client => lost += 1,
                None => {}
            }
        }
        self.count_lost(lost);
    }

    /// Counts publishes without an id that failed.
    fn count_lost(&self, n: u64) {
        if n > 0 {
            self.links
                .metrics
                .publish_failed
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    fn read_replies(&mut self, now: Instant) {
        loop {
            match self.link.next_value() {
                Ok(None) => return,
                Ok(Some(value)) => {
                    let Some((ack, client, _)) = self.pending.pop_front() else {
                        tracing::warn!("Redis reply without a request: {value:?}");
                        continue;
                    };
                    let result = match value {
                        Value::Error(e) => {
                            tracing::warn!("PUBLISH refused: {}", String::from_utf8_lossy(&e));
                            Err(ErrorCode::Unavailable)
                        }
                        _ => Ok(()),
                    };
                    match ack {
                        Some(ack) => self.links.ack(ack, result),
                        None if client && result.is_err() => self.count_lost(1),
                        None => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("bad reply from Redis ({}): reconnecting", e.0);
                    self.lost(now);
                    return;
                }
            }
        }
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Some(cmd) = self.inbox.try_recv() {
            let BrokerCmd::Publish {
                channel,
                payload,
                ack,
            } = cmd
            else {
                continue;
            };
            if !self.link.is_up() || self.link.wbuf.len() > MAX_UNSENT {
                if let Some(ack) = ack {
                    self.links.ack(ack, Err(ErrorCode::Unavailable));
                } else if !is_probe(&channel) {
                    self.count_lost(1);
                }
                continue;
            }
            resp::encode(
                &mut self.link.wbuf,
                &[b"PUBLISH", channel.as_bytes(), &payload],
            );
            // A probe is the node's own: its loss is the reader's business (it
            // reconnects), not a client publish that failed.
            let client = !is_probe(&channel);
            self.pending.push_back((ack, client, now));
        }
    }

    fn check_stuck(&mut self, now: Instant) {
        if let Some((_, _, sent)) = self.pending.front() {
            if now.duration_since(*sent) > REPLY_TIMEOUT {
                tracing::warn!(
                    "Redis did not answer a PUBLISH within {REPLY_TIMEOUT:?}: reconnecting"
                );
                self.lost(now);
            }
        }
    }
}

/// The node's own probe publishes (see `reader.rs`) are not client publishes.
fn is_probe(channel: &str) -> bool {
    channel.starts_with(super::reader::PROBE_PREFIX)
}
