//! The Redis writer thread: takes publishes and history reads from every shard,
//! pipelines them on its own connection (PUBLISH, or the history script on channels
//! with history), and matches each reply to what asked for it: an ack, a read's answer.
//! While Redis is down or too slow, publishes and reads are refused at once
//! (`unavailable`) rather than queued without bound. It owns no thread or poll:
//! `driver.rs` runs it on its own thread or on a shard's loop.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::history::{self as scripts, Scripts};
use super::turn::Turn;
use crate::broker::history::{answer, Found};
use crate::broker::{AckTo, BrokerCmd, ShardLinks};
use crate::config::Config;
use crate::health::Health;
use crate::inbox::Inbox;
use crate::msg::HistoryRead;
use crate::protocol::envelope::EnvelopeBuilder;
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

/// The writer's state and decisions; driven like the reader (`driver.rs`).
pub struct Writer {
    /// Where the link's socket is registered: the driver's `Poll`.
    registry: Registry,
    link: Link,
    links: ShardLinks,
    health: Arc<Health>,
    config: Arc<Config>,
    scripts: Scripts,
    envelope: EnvelopeBuilder,
    /// One entry per command sent, oldest first, with when it was sent.
    pending: VecDeque<(Pending, Instant)>,
}

/// What a sent command's reply is for.
enum Pending {
    /// A PUBLISH (or history publish): who wants the outcome, and whether it is a
    /// client's publish (not the node's probe).
    Publish { ack: Option<AckTo>, client: bool },
    /// A `SCRIPT LOAD`.
    Load,
    /// A history read, answered to whoever asked.
    Read(Box<HistoryRead>),
}

impl Writer {
    pub fn new(
        registry: Registry,
        token: Token,
        url: RedisUrl,
        links: ShardLinks,
        health: Arc<Health>,
        config: Arc<Config>,
    ) -> Writer {
        Writer {
            registry,
            link: Link::new(url, token, "writer"),
            links,
            health,
            config,
            scripts: Scripts::default(),
            envelope: EnvelopeBuilder::default(),
            pending: VecDeque::new(),
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
                if self.config.namespaces.any_history() {
                    self.load_scripts(Instant::now());
                }
            }
            LinkEvent::Lost => self.fail_pending(),
            LinkEvent::Nothing => {}
        }
    }

    /// Loads the history scripts (first thing on every connection: a restarted Redis
    /// has forgotten them, and `EVALSHA` behind this in the pipeline finds them).
    fn load_scripts(&mut self, now: Instant) {
        scripts::encode_load(&mut self.link.wbuf);
        self.pending.push_back((Pending::Load, now));
        self.pending.push_back((Pending::Load, now));
    }

    fn lost(&mut self, now: Instant) {
        self.link.disconnect(&self.registry, now);
        self.fail_pending();
    }

    /// The connection is gone: every PUBLISH buffered or in flight on it is lost (or at
    /// least unconfirmed). Those with an id are answered (the shard counts the failure);
    /// those without are counted here.
    fn fail_pending(&mut self) {
        self.health.publisher_ok.store(false, Ordering::Relaxed);
        let mut lost = 0u64;
        for (pending, _) in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Publish { ack: Some(ack), .. } => {
                    self.links.ack(ack, Err(ErrorCode::Unavailable))
                }
                Pending::Publish { client: true, .. } => lost += 1,
                Pending::Read(read) => answer(&self.links, &mut self.envelope, *read, Err(())),
                Pending::Publish { .. } | Pending::Load => {}
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
                    let Some((pending, _)) = self.pending.pop_front() else {
                        tracing::warn!("Redis reply without a request: {value:?}");
                        continue;
                    };
                    self.on_reply(pending, value, now);
                }
                Err(e) => {
                    tracing::warn!("bad reply from Redis ({}): reconnecting", e.0);
                    self.lost(now);
                    return;
                }
            }
        }
    }

    fn on_reply(&mut self, pending: Pending, value: Value, now: Instant) {
        if let Value::Error(e) = &value {
            if e.starts_with(b"NOSCRIPT") {
                // The scripts were flushed under us: load them again for what follows.
                self.load_scripts(now);
            }
        }
        match pending {
            Pending::Publish { ack, client } => {
                let result = match value {
                    Value::Error(e) => {
                        tracing::warn!("PUBLISH refused: {}", String::from_utf8_lossy(&e));
                        Err(ErrorCode::Unavailable)
                    }
                    // The history script answers the message's offset.
                    other => Ok(scripts::decode_published(&other)),
                };
                match ack {
                    Some(ack) => self.links.ack(ack, result),
                    None if client && result.is_err() => self.count_lost(1),
                    None => {}
                }
            }
            Pending::Load => {
                if let Value::Error(e) = value {
                    tracing::warn!(
                        "Redis refused to load the history scripts: {}",
                        String::from_utf8_lossy(&e)
                    );
                }
            }
            Pending::Read(read) => {
                let found: Result<Found, ()> = match value {
                    Value::Error(e) => {
                        tracing::warn!("history read refused: {}", String::from_utf8_lossy(&e));
                        Err(())
                    }
                    other => scripts::decode_read(other).ok_or_else(|| {
                        tracing::warn!("malformed history answer from Redis");
                    }),
                };
                answer(&self.links, &mut self.envelope, *read, found);
            }
        }
    }

    fn drain_inbox(&mut self, inbox: &Inbox<BrokerCmd>, now: Instant) {
        while let Some(cmd) = inbox.try_recv() {
            let (channel, payload, ack) = match cmd {
                BrokerCmd::Publish {
                    channel,
                    payload,
                    ack,
                } => (channel, payload, ack),
                BrokerCmd::History(read) => {
                    if !self.link.is_up() || self.link.wbuf.len() > MAX_UNSENT {
                        answer(&self.links, &mut self.envelope, *read, Err(()));
                    } else {
                        scripts::encode_read(&mut self.link.wbuf, &self.scripts, &read);
                        self.pending.push_back((Pending::Read(read), now));
                    }
                    continue;
                }
                _ => continue,
            };
            if !self.link.is_up() || self.link.wbuf.len() > MAX_UNSENT {
                if let Some(ack) = ack {
                    self.links.ack(ack, Err(ErrorCode::Unavailable));
                } else if !is_probe(&channel) {
                    self.count_lost(1);
                }
                continue;
            }
            let ns = self.config.namespaces.lookup(&channel);
            if ns.history_size > 0 && !crate::protocol::channel::is_internal(&channel) {
                scripts::encode_publish(&mut self.link.wbuf, &self.scripts, &channel, &payload, ns);
            } else {
                resp::encode(
                    &mut self.link.wbuf,
                    &[b"PUBLISH", channel.as_bytes(), &payload],
                );
            }
            // A probe is the node's own: its loss is the reader's business (it
            // reconnects), not a client publish that failed.
            let client = !is_probe(&channel);
            self.pending
                .push_back((Pending::Publish { ack, client }, now));
        }
    }

    fn check_stuck(&mut self, now: Instant) {
        if let Some((_, sent)) = self.pending.front() {
            if now.duration_since(*sent) > REPLY_TIMEOUT {
                tracing::warn!(
                    "Redis did not answer a command within {REPLY_TIMEOUT:?}: reconnecting"
                );
                self.lost(now);
            }
        }
    }
}

impl Turn for Writer {
    fn token(&self) -> Token {
        self.link.token()
    }

    fn timeout(&self, now: Instant) -> Duration {
        let t = self.link.timeout(now).unwrap_or(Duration::from_millis(500));
        t.min(Duration::from_millis(500))
    }

    fn ready(&mut self, now: Instant) {
        let ev = self.link.on_ready(&self.registry, now);
        self.on_link_event(ev);
    }

    /// One loop turn: connect or reconnect, match replies, take the shards' publishes
    /// and reads, flush, fail a stuck connection.
    fn turn(&mut self, inbox: &Inbox<BrokerCmd>, now: Instant) {
        let ev = self.link.maintain(&self.registry, now);
        self.on_link_event(ev);
        self.read_replies(now);
        super::note_auth(&mut self.link, &self.health, &self.links.metrics);
        self.drain_inbox(inbox, now);
        if self.link.is_up() && self.link.flush().is_err() {
            self.lost(now);
        }
        self.check_stuck(now);
    }
}

/// The node's own probe publishes (see `reader.rs`) are not client publishes.
fn is_probe(channel: &str) -> bool {
    channel.starts_with(super::reader::PROBE_PREFIX)
}
