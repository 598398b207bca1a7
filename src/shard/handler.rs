//! What a shard does with each client command (decoded by the connection's session) and
//! each broker answer:
//! subscribe / unsubscribe against the local index (asking the broker only on a channel's
//! first and last local subscriber), publish handed to the broker, replies queued.

use super::subs::ChanId;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::admission::Bucket;
use super::conn::ConnId;
use super::conn::Key;
use super::session::{may_subscribe, Cmd, Refresh};
use super::subs::{Added, Pos};
use super::{history_query, Shard};
use crate::msg::{AckTo, BrokerCmd};
use crate::protocol::{reply, ErrorCode};

impl Shard {
    /// Carries out one client command.
    pub(super) fn on_command(&mut self, key: Key, cmd: Cmd) {
        let Some(conn) = self.wire.conns.get(key) else {
            return;
        };
        if let Err(code) = conn.session.permits(&cmd, &self.ctx.config.namespaces) {
            return self.refuse(key, code, &cmd);
        }
        match cmd {
            Cmd::Subscribe(channel, since) => self.subscribe(key, &channel, since),
            Cmd::Unsubscribe(channel) => self.unsubscribe(key, &channel),
            Cmd::Publish {
                channel,
                payload,
                id,
            } => self.publish(key, channel, payload, id),
            Cmd::Presence(user) => self.presence(key, &user),
            Cmd::Auth(token) => self.auth_message(key, &token),
            Cmd::History {
                channel,
                limit,
                since,
                id,
            } => history_query::query(&self.ctx, &mut self.wire, key, &channel, limit, since, id),
        }
    }

    /// A command the connection's token does not allow (or no token yet).
    fn refuse(&mut self, key: Key, code: ErrorCode, cmd: &Cmd) {
        let (id, channel) = match cmd {
            Cmd::Subscribe(c, _) | Cmd::Unsubscribe(c) => (None, Some(&**c)),
            Cmd::Publish { channel, id, .. } | Cmd::History { channel, id, .. } => {
                (id.as_deref(), Some(&**channel))
            }
            Cmd::Presence(_) | Cmd::Auth(_) => (None, None),
        };
        let message = match (code, cmd) {
            (ErrorCode::Unauthorized, _) => {
                "authenticate first: {\"type\":\"auth\",\"token\":\"...\"}"
            }
            (_, Cmd::Publish { .. }) => "publishing to this channel is not allowed",
            _ => "the token does not allow this channel",
        };
        self.wire
            .simple_error(&self.ctx, key, code, message, id, channel);
    }

    /// `{"type":"auth","token":…}`: the first token of the connection, or a refresh
    /// (same `sub`). An invalid token, or one for another user, closes with 4001.
    fn auth_message(&mut self, key: Key, token: &str) {
        let Some(verifier) = self.admit.auth.clone() else {
            return self.wire.simple_error(
                &self.ctx,
                key,
                ErrorCode::BadRequest,
                "authentication is off on this node",
                None,
                None,
            );
        };
        let unix_now = crate::auth::unix_now();
        let grant = match verifier.verify(token, unix_now) {
            Ok(grant) => grant,
            Err(_) => {
                self.ctx.m().client_errors.fetch_add(1, Ordering::Relaxed);
                return self.wire.close_ws(key, 4001, "unauthorized");
            }
        };
        let now = self.ctx.clock.coarse();
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        let answer = reply::authenticated(&grant.sub, grant.exp);
        let sub = grant.sub.clone();
        match conn.session.authenticate(grant, now, unix_now) {
            Refresh::OtherUser => return self.wire.close_ws(key, 4001, "unauthorized"),
            Refresh::Renewed => {
                self.wire.queue(&self.ctx, key, answer);
                return self.drop_disallowed(key);
            }
            Refresh::First => {
                let (limits, m) = (&self.ctx.config.limits, self.ctx.m());
                if !self.admit.admit_user(limits, m, &sub, &mut conn.limits) {
                    return self
                        .wire
                        .close_ws(key, 1008, "too many connections for this user");
                }
                self.api.opened(&self.ctx, &mut self.wire, key, Some(&sub))
            }
        }
        self.wire.queue(&self.ctx, key, answer);
    }

    /// After a refresh: subscriptions the new token no longer allows are dropped, each
    /// answered `unsubscribed`.
    fn drop_disallowed(&mut self, key: Key) {
        let Some(conn) = self.wire.conns.get(key) else {
            return;
        };
        let Some(grant) = conn.session.grant() else {
            return;
        };
        let gone: Vec<std::sync::Arc<str>> = conn
            .subs
            .iter()
            .filter_map(|&(chan, _)| self.fan.subs.channel(chan))
            .filter(|ch| !may_subscribe(grant, &self.ctx.config.namespaces, &ch.name))
            .map(|ch| ch.name.clone())
            .collect();
        for name in gone {
            self.unsubscribe(key, &name);
        }
    }

    fn subscribe(&mut self, key: Key, channel: &str, since: Option<crate::offset::Offset>) {
        let history = self.ctx.has_history(channel);
        if since.is_some() && !history {
            return self.wire.simple_error(
                &self.ctx,
                key,
                ErrorCode::BadRequest,
                "this channel keeps no history: since is not allowed",
                None,
                Some(channel),
            );
        }
        let Some(conn) = self.wire.conns.get(key) else {
            return;
        };
        if let Some(chan) = self.fan.subs.lookup(channel) {
            if let Some(i) = conn.sub_index(chan) {
                // Already subscribed: answer again if it was confirmed; a connection
                // still waiting gets its one `subscribed` when the broker confirms
                // (never one per repeat: the waiter list stays bounded).
                if !conn.subs[i].1.is_waiting() {
                    let last = self
                        .fan
                        .subs
                        .channel(chan)
                        .and_then(|c| c.hist.as_ref())
                        .and_then(|h| h.last);
                    let frame = match last {
                        Some(last) => reply::subscribed_at(channel, &last),
                        None => reply::subscribed(channel),
                    };
                    self.wire.queue(&self.ctx, key, frame);
                }
                return;
            }
        }
        if conn.subs.len() >= self.ctx.config.limits.max_subscriptions {
            self.wire.simple_error(
                &self.ctx,
                key,
                ErrorCode::BadRequest,
                "subscription limit reached",
                None,
                Some(channel),
            );
            return;
        }
        if since.is_some() && !history_query::allowed(&self.ctx, &mut self.wire, key, channel, None)
        {
            return;
        }
        let (chan, pos, added) = self.fan.subs.add(channel, key.raw(), history, since);
        if let Some(conn) = self.wire.conns.get_mut(key) {
            conn.subs.push((chan, pos));
        }
        self.ctx.m().subscriptions.fetch_add(1, Ordering::Relaxed);
        match added {
            Added::Live if history => {
                let name = self.fan.subs.channel(chan).map(|c| c.name.clone());
                if let Some(name) = name {
                    self.fan
                        .joined(&self.ctx, &mut self.wire, key, chan, &name, since);
                }
            }
            Added::Live => self.wire.queue(&self.ctx, key, reply::subscribed(channel)),
            Added::Pending => {}
            Added::NewChannel(epoch) => {
                let Some(ch) = self.fan.subs.channel(chan) else {
                    return;
                };
                let cmd = BrokerCmd::Subscribe {
                    channel: ch.name.clone(),
                    shard: self.ctx.id,
                    epoch,
                };
                if self.ctx.broker.send(cmd).is_err() {
                    // The broker cannot take it: undo, so a later subscribe tries again.
                    self.drop_subscription(key, chan);
                    self.wire.simple_error(
                        &self.ctx,
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

    fn drop_subscription(&mut self, key: Key, chan: ChanId) {
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        let Some(i) = conn.sub_index(chan) else {
            return;
        };
        let (_, pos) = conn.subs.swap_remove(i);
        self.ctx.m().subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.fan.leave(&self.ctx, &mut self.wire, chan, pos);
    }

    fn unsubscribe(&mut self, key: Key, channel: &str) {
        if let Some(chan) = self.fan.subs.lookup(channel) {
            self.drop_subscription(key, chan);
        }
        self.wire
            .queue(&self.ctx, key, reply::unsubscribed(channel));
    }

    fn publish(&mut self, key: Key, channel: Box<str>, payload: Bytes, id: Option<Box<str>>) {
        let Some(conn) = self.wire.conns.get(key) else {
            return;
        };
        let gen = conn.gen;
        let broker_down = self.ctx.config.redis.is_some()
            && !self.ctx.health.publisher_ok.load(Ordering::Relaxed);
        if broker_down {
            return self.publish_refused(key, &channel, id.as_deref());
        }
        if !self.ctx.config.client_publish {
            return self.wire.simple_error(
                &self.ctx,
                key,
                ErrorCode::Forbidden,
                "publishing over the WebSocket is off on this server (--client-publish off)",
                id.as_deref(),
                Some(&channel),
            );
        }
        if !self.publish_allowed(key) {
            self.ctx.m().rate_limited.fetch_add(1, Ordering::Relaxed);
            return self.wire.simple_error(
                &self.ctx,
                key,
                ErrorCode::RateLimited,
                "publish rate exceeded, message not published",
                id.as_deref(),
                Some(&channel),
            );
        }
        let ack = id.map(|id| AckTo {
            shard: self.ctx.id,
            conn: ConnId {
                key: key.raw(),
                gen,
            },
            id,
        });
        let cmd = BrokerCmd::Publish {
            channel,
            payload,
            ack,
        };
        match self.ctx.broker.send(cmd) {
            Ok(()) => {
                self.ctx.m().publishes.fetch_add(1, Ordering::Relaxed);
            }
            Err(BrokerCmd::Publish { channel, ack, .. }) => {
                self.publish_refused(key, &channel, ack.as_ref().map(|a| &*a.id))
            }
            Err(_) => {}
        }
    }

    /// `--publish-rate`: takes one publish from the connection's token bucket.
    fn publish_allowed(&mut self, key: Key) -> bool {
        let rate = self.ctx.config.limits.publish_rate;
        if rate == 0 {
            return true;
        }
        let now_ms = self.ctx.clock.ms();
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return false;
        };
        let limits = conn.limits.get_or_insert_with(Default::default);
        limits
            .bucket
            .get_or_insert_with(|| Bucket::full(rate, now_ms))
            .take(rate, now_ms)
    }

    fn publish_refused(&mut self, key: Key, channel: &str, id: Option<&str>) {
        self.ctx
            .m()
            .publish_rejected
            .fetch_add(1, Ordering::Relaxed);
        self.wire.simple_error(
            &self.ctx,
            key,
            ErrorCode::Unavailable,
            "broker is unavailable, message not published",
            id,
            Some(channel),
        );
    }

    fn presence(&mut self, key: Key, user: &str) {
        self.api
            .presence_query(&self.ctx, &mut self.wire, key, user, false);
    }

    /// The broker confirmed channel `channel` for the subscribe sent with `epoch`.
    pub(super) fn on_subscribed(&mut self, channel: &str, epoch: u32) {
        let Some(chan) = self.fan.subs.lookup(channel) else {
            return;
        };
        let Some(ch) = self.fan.subs.channel_mut(chan) else {
            return;
        };
        if ch.epoch != epoch {
            return; // a confirmation of an earlier, since abandoned subscribe
        }
        if ch.hist.is_some() {
            // A history channel answers its subscribers with its offset: the first
            // time, only once it has read it.
            if ch.unsynced() {
                let syncing = ch.hist.as_ref().is_some_and(|h| h.syncing != 0);
                self.fan.subs.set_live(chan);
                if !syncing {
                    self.fan.start_sync(&self.ctx, chan);
                }
            } else {
                self.fan.admit_waiters(&self.ctx, &mut self.wire, chan);
            }
            return;
        }
        // Waiters become members (deliveries start now) and are told `subscribed`, in
        // that order on their queue: nothing of this channel reaches them before it.
        let (waiters, first) = self.fan.subs.confirm(chan);
        if waiters.is_empty() {
            return;
        }
        let frame = reply::subscribed(channel);
        for (n, &key) in waiters.iter().enumerate() {
            if let Some(c) = self.wire.conns.get_mut(Key::from_raw(key)) {
                if let Some(i) = c.sub_index(chan) {
                    c.subs[i].1 = Pos::member(first + n);
                }
            }
            self.wire
                .queue(&self.ctx, Key::from_raw(key), frame.clone());
        }
    }

    /// The broker connection was lost: local channels wait for a new confirmation.
    pub(super) fn on_unconfirmed(&mut self) {
        self.fan.subs.unconfirm_all();
    }

    /// The broker's answer to a publish with an id.
    pub(super) fn on_published(
        &mut self,
        conn: ConnId,
        id: &str,
        result: Result<Option<crate::offset::Offset>, ErrorCode>,
    ) {
        let key = Key::from_raw(conn.key);
        if result.is_err() {
            // Counted whether or not the client is still there to be told.
            self.ctx
                .metrics
                .publish_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        if self
            .wire
            .conns
            .get(key)
            .map(|c| c.gen != conn.gen)
            .unwrap_or(true)
        {
            return;
        }
        match result {
            Ok(offset) => self
                .wire
                .queue(&self.ctx, key, reply::published(id, offset.as_ref())),
            Err(code) => self.wire.simple_error(
                &self.ctx,
                key,
                code,
                "publish failed: broker unavailable",
                Some(id),
                None,
            ),
        }
    }
}
