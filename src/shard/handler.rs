//! What a shard does with each client command (decoded by the connection's session) and
//! each broker answer:
//! subscribe / unsubscribe against the local index (asking the broker only on a channel's
//! first and last local subscriber), publish handed to the broker, replies queued.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::conn::ConnId;
use super::session::Cmd;
use super::subs::Added;
use super::Shard;
use crate::broker::{AckTo, BrokerCmd};
use crate::protocol::{reply, ErrorCode};

impl Shard {
    fn simple_error(
        &mut self,
        key: usize,
        code: ErrorCode,
        message: &'static str,
        id: Option<&str>,
        channel: Option<&str>,
    ) {
        self.metrics.shards[self.id]
            .client_errors
            .fetch_add(1, Ordering::Relaxed);
        self.queue(key, reply::error(code, message, id, channel));
    }

    /// Carries out one client command.
    pub(super) fn on_command(&mut self, key: usize, cmd: Cmd) {
        match cmd {
            Cmd::Subscribe(channel) => self.subscribe(key, &channel),
            Cmd::Unsubscribe(channel) => self.unsubscribe(key, &channel),
            Cmd::Publish {
                channel,
                payload,
                id,
            } => self.publish(key, channel, payload, id),
            Cmd::Presence(user) => self.presence(key, &user),
        }
    }

    fn subscribe(&mut self, key: usize, channel: &str) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if let Some(chan) = self.subs.lookup(channel) {
            if conn.sub_index(chan).is_some() {
                // Already subscribed: answer again once live (idempotent).
                if self.subs.channel(chan).map(|c| c.live).unwrap_or(false) {
                    self.queue(key, reply::subscribed(channel));
                } else if let Some(ch) = self.subs.channel_mut(chan) {
                    ch.waiters.push((key as u32, conn.gen));
                }
                return;
            }
        }
        if conn.subs.len() >= self.config.limits.max_subscriptions {
            self.simple_error(
                key,
                ErrorCode::BadRequest,
                "subscription limit reached",
                None,
                Some(channel),
            );
            return;
        }
        let gen = conn.gen;
        let (chan, pos, added) = self.subs.add(channel, key as u32);
        if let Some(conn) = self.conns.get_mut(key) {
            conn.subs.push((chan, pos));
        }
        self.metrics.shards[self.id]
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        match added {
            Added::Live => self.queue(key, reply::subscribed(channel)),
            Added::Pending => {
                if let Some(ch) = self.subs.channel_mut(chan) {
                    ch.waiters.push((key as u32, gen));
                }
            }
            Added::NewChannel(epoch) => {
                let Some(ch) = self.subs.channel_mut(chan) else {
                    return;
                };
                ch.waiters.push((key as u32, gen));
                let cmd = BrokerCmd::Subscribe {
                    channel: ch.name.clone(),
                    shard: self.id,
                    epoch,
                };
                if self.broker.send(cmd).is_err() {
                    // The broker cannot take it: undo, so a later subscribe tries again.
                    self.drop_subscription(key, chan);
                    self.simple_error(
                        key,
                        ErrorCode::Unavailable,
                        "broker is busy, try again",
                        None,
                        Some(channel),
                    );
                }
            }
        }
    }

    fn drop_subscription(&mut self, key: usize, chan: u32) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(i) = conn.sub_index(chan) else {
            return;
        };
        let (_, pos) = conn.subs.swap_remove(i);
        self.metrics.shards[self.id]
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
        self.leave(chan, pos);
    }

    fn unsubscribe(&mut self, key: usize, channel: &str) {
        if let Some(chan) = self.subs.lookup(channel) {
            self.drop_subscription(key, chan);
        }
        self.queue(key, reply::unsubscribed(channel));
    }

    fn publish(&mut self, key: usize, channel: Box<str>, payload: Bytes, id: Option<Box<str>>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let gen = conn.gen;
        let broker_down =
            self.config.redis.is_some() && !self.health.publisher_ok.load(Ordering::Relaxed);
        if broker_down {
            return self.publish_refused(key, &channel, id.as_deref());
        }
        let ack = id.map(|id| AckTo {
            shard: self.id,
            conn: ConnId {
                key: key as u32,
                gen,
            },
            id,
        });
        let cmd = BrokerCmd::Publish {
            channel,
            payload,
            ack,
        };
        match self.broker.send(cmd) {
            Ok(()) => {
                self.metrics.shards[self.id]
                    .publishes
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(BrokerCmd::Publish { channel, ack, .. }) => {
                self.publish_refused(key, &channel, ack.as_ref().map(|a| &*a.id))
            }
            Err(_) => {}
        }
    }

    fn publish_refused(&mut self, key: usize, channel: &str, id: Option<&str>) {
        self.metrics.shards[self.id]
            .publish_rejected
            .fetch_add(1, Ordering::Relaxed);
        self.simple_error(
            key,
            ErrorCode::Unavailable,
            "broker is unavailable, message not published",
            id,
            Some(channel),
        );
    }

    fn presence(&mut self, key: usize, user: &str) {
        self.presence_query(key, user, false);
    }

    /// The broker confirmed channel `channel` for the subscribe sent with `epoch`.
    pub(super) fn on_subscribed(&mut self, channel: &str, epoch: u32) {
        let Some(chan) = self.subs.lookup(channel) else {
            return;
        };
        let Some(ch) = self.subs.channel_mut(chan) else {
            return;
        };
        if ch.epoch != epoch {
            return; // a confirmation of an earlier, since abandoned subscribe
        }
        ch.live = true;
        let waiters = std::mem::take(&mut ch.waiters);
        let frame = reply::subscribed(channel);
        for (key, gen) in waiters {
            let subscribed = self
                .conns
                .get(key as usize)
                .map(|c| c.gen == gen && c.sub_index(chan).is_some())
                .unwrap_or(false);
            if subscribed {
                self.queue(key as usize, frame.clone());
            }
        }
    }

    /// The broker's answer to a publish with an id.
    pub(super) fn on_published(&mut self, conn: ConnId, id: &str, result: Result<(), ErrorCode>) {
        let key = conn.key as usize;
        if self
            .conns
            .get(key)
            .map(|c| c.gen != conn.gen)
            .unwrap_or(true)
        {
            return;
        }
        match result {
            Ok(()) => self.queue(key, reply::published(id)),
            Err(code) => {
                self.metrics.publish_failed.fetch_add(1, Ordering::Relaxed);
                self.simple_error(
                    key,
                    code,
                    "publish failed: broker unavailable",
                    Some(id),
                    None,
                )
            }
        }
    }
}
