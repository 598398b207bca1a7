//! The shard's side of presence and of the HTTP API: recording a WebSocket in presence
//! when it opens and removing it when it closes (through a backlog when the presence
//! queue is full, so no entry is ever leaked), presence queries over WebSocket and HTTP
//! (answered later through `ShardMsg::Reply`), `POST /api/publish`,
//! `POST /api/users/{U}/disconnect` (sent to every node through the control channel,
//! carried out by `disconnect_user`), and the admission checks of an upgrade (origin,
//! user parameter). `Api` owns the presence link; it answers through `Wire` and never
//! reads a socket or removes a connection. Pure parsing lives in `crate::api`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::conn::{Conn, ConnId, Key, Phase};
use super::ctx::Ctx;
use super::history_query;
use super::output::Wire;
use crate::api;
use crate::http::response;
use crate::msg::BrokerCmd;
use crate::presence::{Msg, PresenceHandle, PresenceMetrics, ReplyTo};
use crate::protocol::channel::CONTROL_CHANNEL;
use crate::protocol::{control, reply, ErrorCode};
use crate::ws::handshake::RequestHead;

/// See `config::Tuning`.
const BACKLOG: usize = crate::config::TUNING.presence_backlog;

/// A shard's link to the presence thread.
pub struct PresenceLink {
    handle: PresenceHandle,
    /// Updates the queue could not take yet, in order; retried on every update and tick.
    backlog: VecDeque<Msg>,
}

impl PresenceLink {
    pub fn new(handle: PresenceHandle) -> PresenceLink {
        PresenceLink {
            handle,
            backlog: VecDeque::new(),
        }
    }

    /// Queues an open/close in order. False: a connect that was not recorded.
    fn update(&mut self, msg: Msg, m: &PresenceMetrics) -> bool {
        self.flush();
        let msg = if self.backlog.is_empty() {
            match self.handle.try_send(msg) {
                Ok(()) => return true,
                Err(msg) => msg,
            }
        } else {
            msg
        };
        if self.backlog.len() >= BACKLOG && matches!(msg, Msg::Open { .. }) {
            m.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        m.deferred.fetch_add(1, Ordering::Relaxed);
        self.backlog.push_back(msg);
        true
    }

    /// Hands over what the backlog holds, as far as the queue takes it.
    pub fn flush(&mut self) {
        while let Some(msg) = self.backlog.pop_front() {
            if let Err(msg) = self.handle.try_send(msg) {
                self.backlog.push_front(msg);
                return;
            }
        }
    }
}

/// The shard's side of presence and of the HTTP API: the link to the presence thread
/// (when presence is on) and the answers to `/api/...`.
pub struct Api {
    link: Option<PresenceLink>,
}

impl Api {
    pub fn new(presence: Option<PresenceHandle>) -> Api {
        Api {
            link: presence.map(PresenceLink::new),
        }
    }

    /// Admission checks of a WebSocket upgrade: the origin policy and the user parameter.
    pub fn admit_upgrade(
        &self,
        ctx: &Ctx,
        auth_on: bool,
        head: &RequestHead,
    ) -> Result<(), (u16, &'static str)> {
        if !api::origin_allowed(&ctx.config.allowed_origins, head.origin.as_deref()) {
            return Err((403, "origin not allowed"));
        }
        // With auth on, the user is the token's `sub`: `?user=` is ignored.
        if self.link.is_some() && ctx.config.presence.user_param && !auth_on {
            if let Some(Err(refusal)) = api::query_param(head.query.as_deref(), "user") {
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// The presence user id a WebSocket opened with `head` is recorded under: `?user=`
    /// when `--presence-user-param` is on (`None`: the connection id). Not used with
    /// auth on (the token's `sub` is the user).
    pub fn user_param(ctx: &Ctx, head: &RequestHead) -> Option<String> {
        if !ctx.config.presence.user_param {
            return None;
        }
        api::query_param(head.query.as_deref(), "user").and_then(Result::ok)
    }

    /// Hook: the WebSocket of `key` just opened (or, with auth on, authenticated), for
    /// `user` (`None`: the connection id is the user).
    pub fn opened(&mut self, ctx: &Ctx, wire: &mut Wire, key: Key, user: Option<&str>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let Some(conn) = wire.conns.get_mut(key) else {
            return;
        };
        if conn.session.is_echo() {
            return;
        }
        let cid = link.handle.conn_id(ctx.id, conn.gen);
        let (user, stored): (Box<str>, Box<str>) = match user {
            Some(u) => (u.into(), u.into()),
            None => (cid.clone(), "".into()),
        };
        if link.update(Msg::Open { user, cid }, &ctx.metrics.presence) {
            conn.presence = Some(stored);
        }
    }

    /// Hook: connection `conn` was removed from the shard.
    pub fn closed(&mut self, ctx: &Ctx, conn: &Conn) {
        let (Some(stored), Some(link)) = (conn.presence.as_deref(), self.link.as_mut()) else {
            return;
        };
        let cid = link.handle.conn_id(ctx.id, conn.gen);
        let user = if stored.is_empty() {
            cid.clone()
        } else {
            stored.into()
        };
        link.update(Msg::Close { user, cid }, &ctx.metrics.presence);
    }

    /// Hook: once a second.
    pub fn tick(&mut self) {
        if let Some(link) = self.link.as_mut() {
            link.flush();
        }
    }

    /// Asks the presence thread about `user`; the answer comes back as a `Reply`.
    pub fn presence_query(&self, ctx: &Ctx, wire: &mut Wire, key: Key, user: &str, http: bool) {
        let Some(conn) = wire.conns.get(key) else {
            return;
        };
        let to = ReplyTo {
            shard: ctx.id,
            conn: ConnId {
                key: key.raw(),
                gen: conn.gen,
            },
            http,
        };
        let refused = match self.link.as_ref() {
            None => Some("presence is not enabled on this node"),
            Some(link) => {
                let msg = Msg::Query {
                    user: user.into(),
                    to,
                };
                link.handle.try_send(msg).err().map(|_| {
                    ctx.metrics.presence.dropped.fetch_add(1, Ordering::Relaxed);
                    "presence is busy, try again"
                })
            }
        };
        match (refused, http) {
            (Some(why), false) => wire.queue(
                ctx,
                key,
                reply::error(ErrorCode::Unavailable, why, None, None),
            ),
            (Some(why), true) => {
                let keep_alive = wire.conns.get(key).is_some_and(|c| c.session.keep_alive());
                wire.respond_http(ctx, key, response::json_error(503, why), keep_alive)
            }
            // The session waits (`HttpWait`) for the answer; at the handshake timeout the
            // tick answers 504.
            (None, true) => {}
            (None, false) => {}
        }
    }

    /// Bytes for one connection from another thread (`ShardMsg::Reply`): a WebSocket
    /// reply, or the HTTP answer a request in `HttpWait` waits for (`close_after`).
    pub fn on_reply(ctx: &Ctx, wire: &mut Wire, to: ConnId, frame: Bytes, close_after: bool) {
        let key = Key::of(to);
        let (phase, keep_alive) = match wire.conns.get(key) {
            Some(c) if c.gen == to.gen => (c.phase(), c.session.keep_alive()),
            _ => return,
        };
        match phase {
            Phase::HttpWait if close_after => {
                wire.respond_http(ctx, key, frame.to_vec(), keep_alive);
                // What the client pipelined meanwhile is parsed once this is written.
            }
            Phase::Open if !close_after => wire.queue(ctx, key, frame),
            _ => {}
        }
    }

    /// Answers `/api/...` requests; false for any other path.
    pub fn answer_api(
        &self,
        ctx: &Ctx,
        wire: &mut Wire,
        key: Key,
        head: &RequestHead,
        body: &[u8],
    ) -> bool {
        let key_ok = api::key_ok(ctx.config.api_key.as_deref(), head.api_key.as_deref());
        let response = if head.path == "/api/publish" {
            if head.method != "POST" {
                response::method_not_allowed("POST")
            } else if !key_ok {
                response::json_error(401, "missing or wrong API key")
            } else if head.content_length.is_none() {
                response::json_error(411, "Content-Length required")
            } else {
                Self::api_publish(ctx, body)
            }
        } else if let Some(user) = api::disconnect_path(&head.path) {
            if head.method != "POST" {
                response::method_not_allowed("POST")
            } else if !key_ok {
                response::json_error(401, "missing or wrong API key")
            } else {
                match user {
                    Ok(user) => Self::api_disconnect(ctx, &user),
                    Err((status, why)) => response::json_error(status, why),
                }
            }
        } else if let Some(user) = api::user_path(&head.path) {
            if head.method != "GET" {
                response::method_not_allowed("GET")
            } else if !key_ok {
                response::json_error(401, "missing or wrong API key")
            } else {
                match user {
                    Ok(user) => {
                        self.presence_query(ctx, wire, key, &user, true);
                        return true;
                    }
                    Err((status, why)) => response::json_error(status, why),
                }
            }
        } else if let Some(query) = api::history_path(
            &head.path,
            head.query.as_deref(),
            ctx.config.limits.max_channel_len,
        ) {
            if head.method != "GET" {
                response::method_not_allowed("GET")
            } else if !key_ok {
                response::json_error(401, "missing or wrong API key")
            } else {
                match query {
                    Ok(q) => {
                        match history_query::http(ctx, wire, key, &q.channel, q.limit, q.since) {
                            None => return true, // answered later, as a `Reply`
                            Some(response) => response,
                        }
                    }
                    Err((status, why)) => response::json_error(status, why),
                }
            }
        } else if head.path.starts_with("/api/") {
            response::json_error(404, "no such API endpoint")
        } else {
            return false;
        };
        wire.respond_http(ctx, key, response, head.keep_alive);
        true
    }

    /// `POST /api/users/{U}/disconnect`: a disconnect command on the control channel,
    /// which every node (this one included) carries out as it receives it: through Redis
    /// in cluster mode, through the embedded bus otherwise. 202 once the broker took it.
    fn api_disconnect(ctx: &Ctx, user: &str) -> Vec<u8> {
        if ctx.config.redis.is_some() && !ctx.health.publisher_ok.load(Ordering::Relaxed) {
            return response::json_error(503, "broker unavailable");
        }
        let cmd = BrokerCmd::Publish {
            channel: CONTROL_CHANNEL.into(),
            payload: control::disconnect(user),
            ack: None,
        };
        if ctx.broker.send(cmd).is_err() {
            return response::json_error(503, "broker unavailable");
        }
        response::json_response(202, b"{\"disconnected\":true}\n", "")
    }

    /// `ShardMsg::Disconnect`: closes every WebSocket of `user` on this shard with 4004.
    /// A connection's user is its token's `sub` with auth on; without auth, its presence
    /// user id (`?user=` with `--presence-user-param`, else its connection id).
    pub fn disconnect_user(&self, ctx: &Ctx, wire: &mut Wire, user: &str) {
        // Connection ids of this shard are "<tag>:<shard>:<gen>": matched by `gen`.
        let by_cid: Option<u32> = self.link.as_ref().and_then(|link| {
            let zero = link.handle.conn_id(ctx.id, 0);
            let prefix = zero.strip_suffix('0')?;
            user.strip_prefix(prefix)?.parse().ok()
        });
        let matches = |c: &Conn| match (c.session.grant(), c.presence.as_deref()) {
            (Some(grant), _) => *grant.sub == *user,
            (None, Some("")) => by_cid == Some(c.gen),
            (None, Some(stored)) => stored == user,
            (None, None) => false,
        };
        let keys: Vec<Key> = wire
            .conns
            .iter()
            .filter(|(_, c)| c.session.is_open() && matches(c))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            wire.close_ws(key, control::DISCONNECT_CODE, control::DISCONNECT_REASON);
        }
    }

    /// `POST /api/publish`: one message or a batch, in order, through the broker.
    fn api_publish(ctx: &Ctx, body: &[u8]) -> Vec<u8> {
        let messages = match api::parse_publish(body, &ctx.config.limits) {
            Ok(m) => m,
            Err((status, why)) => return response::json_error(status, why),
        };
        if let Some(why) = messages.iter().find_map(|m| ctx.unplaceable(&m.channel)) {
            return response::json_error(400, why);
        }
        let cluster = ctx.config.redis.is_some();
        let m = ctx.m();
        if cluster && !ctx.health.publisher_ok.load(Ordering::Relaxed) {
            m.publish_rejected
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            return response::json_error(503, "broker unavailable");
        }
        let total = messages.len();
        let mut published = 0usize;
        for msg in messages {
            let cmd = BrokerCmd::Publish {
                channel: msg.channel,
                payload: msg.payload,
                ack: None,
            };
            if ctx.broker.send(cmd).is_err() {
                break;
            }
            published += 1;
        }
        m.publishes.fetch_add(published as u64, Ordering::Relaxed);
        if published < total {
            m.publish_rejected
                .fetch_add((total - published) as u64, Ordering::Relaxed);
            let body = format!("{{\"published\":{published},\"error\":\"broker unavailable\"}}\n");
            return response::json_response(503, body.as_bytes(), "");
        }
        response::json_response(
            202,
            format!("{{\"published\":{published}}}\n").as_bytes(),
            "",
        )
    }
}
