//! The command dispatch: what a shard does with each client command (decoded by the
//! connection's session) — subscribe / unsubscribe handed to `Fanout`, history reads to
//! `history_query`, presence to `Api`; authentication (token, refresh, per-user count)
//! and publish (rate, broker) carried out here, replies queued through `Wire`, and the
//! broker's answer to a publish. Owns no state: the parts it routes to own it.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::admission::Bucket;
use super::conn::ConnId;
use super::conn::Key;
use super::session::{may_subscribe, Cmd, Refresh};
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
        if let (Some(channel), id) = channel_and_id(&cmd) {
            if let Some(why) = self.ctx.unplaceable(channel) {
                return self.wire.simple_error(
                    &self.ctx,
                    key,
                    ErrorCode::BadChannel,
                    why,
                    id,
                    Some(channel),
                );
            }
        }
        match cmd {
            Cmd::Subscribe(channel, since) => {
                self.fan
                    .subscribe(&self.ctx, &mut self.wire, key, &channel, since)
            }
            Cmd::Unsubscribe(channel) => {
                self.fan
                    .unsubscribe(&self.ctx, &mut self.wire, key, &channel)
            }
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
        let (channel, id) = channel_and_id(cmd);
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
            self.fan.unsubscribe(&self.ctx, &mut self.wire, key, &name);
        }
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

    /// The broker's answer to a publish with an id.
    pub(super) fn on_published(
        &mut self,
        conn: ConnId,
        id: &str,
        result: Result<Option<crate::offset::Offset>, ErrorCode>,
    ) {
        let key = Key::of(conn);
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

/// The channel a command names and the id it carries, if any.
fn channel_and_id(cmd: &Cmd) -> (Option<&str>, Option<&str>) {
    match cmd {
        Cmd::Subscribe(c, _) | Cmd::Unsubscribe(c) => (Some(c), None),
        Cmd::Publish { channel, id, .. } | Cmd::History { channel, id, .. } => {
            (Some(channel), id.as_deref())
        }
        Cmd::Presence(_) | Cmd::Auth(_) => (None, None),
    }
}
