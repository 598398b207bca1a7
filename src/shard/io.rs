//! The shard's inputs, routed to the part that owns the state. Sockets: a readable one
//! is drained into the shard's one shared read buffer, the bytes go to the connection's
//! `Session` and the effects it returns are applied, in order (a peer that closes its
//! side still gets what it is owed: the socket is dropped once that is written). The
//! inbox: control messages first, then deliveries as far as `Intake` allows, each
//! handed to `Fanout`, `Wire`, `Api` or the command handler. Owns no state of its own.

use std::io::{ErrorKind, Read};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::conn::Key;
use super::conn::Phase;
use super::session::Effect;
use super::{admission, api, Shard, INBOX_BATCH, READS_PER_EVENT};
use crate::msg::ShardMsg;
use crate::ws::handshake::RequestHead;

impl Shard {
    /// Reads until the socket would block (or the read budget is spent). A read that
    /// fills less than the buffer has taken everything the kernel held, so the loop stops
    /// there without the extra `read` that would only say `WouldBlock` (what tokio does
    /// too): mio's edge-triggered registration reports the next bytes as a new event.
    /// `until_eof` (the event also said the peer closed, or an error) reads on to the end.
    pub(super) fn on_readable(&mut self, key: Key, until_eof: bool) {
        let mut buf = std::mem::take(&mut self.wire.read_buf);
        for round in 0.. {
            let Some(conn) = self.wire.conns.get_mut(key) else {
                break;
            };
            if round == READS_PER_EVENT {
                self.wire.read_again.push(key);
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.peer_closed(key);
                    break;
                }
                Ok(n) => {
                    if conn.phase() == Phase::Closing {
                        continue; // draining what a closing peer still sends
                    }
                    conn.session.heard(self.ctx.clock.coarse());
                    self.ingest(key, &mut buf[..n]);
                    if n < buf.len() && !until_eof {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(key);
                    break;
                }
            }
        }
        self.wire.read_buf = buf;
    }

    /// Hands bytes to the connection's session and applies what they cause. Also called
    /// with nothing new to resume buffered input (a pipelined request once the previous
    /// answer is written, frames sent behind an upgrade).
    pub(super) fn ingest(&mut self, key: Key, data: &mut [u8]) {
        let mut at = 0;
        loop {
            let Some(conn) = self.wire.conns.get_mut(key) else {
                return;
            };
            let may_parse = conn.outq.is_empty();
            let Some(effect) = conn
                .session
                .poll(data, &mut at, &self.ctx.config.limits, may_parse)
            else {
                return;
            };
            self.apply(key, effect);
        }
    }

    /// Carries out one effect of a session.
    fn apply(&mut self, key: Key, effect: Effect) {
        match effect {
            Effect::Send(frame) => {
                // An echo is compressed when deflate was negotiated (a pong never is).
                let bits = self.wire.conns.get(key).map_or(0, |c| c.session.deflate());
                let frame = match bits {
                    0 => frame,
                    bits => crate::ws::deflate::compress_for(&frame, bits),
                };
                self.wire.queue(&self.ctx, key, frame)
            }
            Effect::Error { frame, text } => {
                let m = &self.ctx.m();
                if text {
                    m.messages_in.fetch_add(1, Ordering::Relaxed);
                }
                m.client_errors.fetch_add(1, Ordering::Relaxed);
                self.wire.queue(&self.ctx, key, frame);
            }
            Effect::Command(cmd) => {
                self.ctx.m().messages_in.fetch_add(1, Ordering::Relaxed);
                self.on_command(key, cmd);
            }
            Effect::Close { code, reason } => self.wire.queue_close_frame(key, code, reason),
            Effect::Upgrade(head) => self.upgrade(key, &head),
            Effect::Request(head, body) => self.answer_http(key, &head, &body),
            Effect::Reject(response) => self.wire.respond_http(&self.ctx, key, response, false),
            Effect::Drop => self.close(key),
        }
    }

    /// The peer closed its side (a read returned 0). What it is owed (a response, a
    /// close frame, replies) is still written before the socket is dropped; a request
    /// waiting for another thread's answer gets that answer first.
    fn peer_closed(&mut self, key: Key) {
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        conn.session.peer_closed();
        match conn.phase() {
            Phase::HttpWait => {}
            _ if conn.outq.is_empty() => self.close(key),
            Phase::Closing => {}
            _ => {
                conn.session.close();
                self.wire.mark_dirty(key);
            }
        }
    }

    /// A WebSocket upgrade: admitted (101, presence, then the frames sent behind it) or
    /// refused with an HTTP answer.
    fn upgrade(&mut self, key: Key, head: &RequestHead) {
        let echo = self.ctx.config.echo_path.as_deref() == Some(head.path.as_str());
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        let (ctx, admit) = (&self.ctx, &self.admit);
        let (limits, m) = (&ctx.config.limits, ctx.m());
        let admitted = self
            .api
            .admit_upgrade(ctx, admit.auth.is_some(), head)
            .map_err(|(status, why)| admission::refused(m, status, why))
            .and_then(|()| admit.upgrade_token(m, head, echo))
            .and_then(|grant| {
                admit
                    .admit_ip(limits, m, &conn.stream, &mut conn.limits)
                    .map(|()| grant)
            })
            .and_then(|grant| match &grant {
                Some(g) if !admit.admit_user(limits, m, &g.sub, &mut conn.limits) => {
                    Err((429, "too many connections for this user"))
                }
                _ => Ok(grant),
            });
        let grant = match admitted {
            Ok(grant) => grant,
            Err((status, why)) => {
                let response = crate::http::response::text_response(status, why);
                self.wire.respond_http(&self.ctx, key, response, false);
                return;
            }
        };
        // --compression on: permessage-deflate when the client offers one we can honour.
        let deflate = match head.ws_extensions.as_deref() {
            Some(offers) if self.ctx.config.compression => crate::ws::deflate::negotiate([offers]),
            _ => None,
        };
        let reply = crate::ws::handshake::switching_protocols(
            head.ws_accept.as_deref().unwrap_or(""),
            deflate.as_ref().map(|d| d.answer.as_str()),
        );
        let (now, unix_now) = (self.ctx.clock.coarse(), crate::auth::unix_now());
        let handshake =
            u32::try_from(self.ctx.config.handshake_timeout.as_secs()).unwrap_or(u32::MAX);
        let auth_on = self.admit.auth.is_some() && !echo;
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        conn.session.open(echo);
        conn.session.set_deflate(deflate.map_or(0, |d| d.bits));
        conn.outq.push(reply.into());
        let user = match grant {
            Some(grant) => {
                let sub = grant.sub.clone();
                conn.outq
                    .push(crate::protocol::reply::authenticated(&sub, grant.exp));
                conn.session.authenticate(grant, now, unix_now);
                Some(sub.into_string())
            }
            None if auth_on => {
                // Presence records it once it authenticates.
                conn.session.require_auth(now.saturating_add(handshake));
                self.wire.mark_dirty(key);
                return;
            }
            None => api::Api::user_param(&self.ctx, head),
        };
        self.wire.mark_dirty(key);
        self.api
            .opened(&self.ctx, &mut self.wire, key, user.as_deref());
    }

    fn answer_http(&mut self, key: Key, head: &RequestHead, body: &[u8]) {
        if self
            .api
            .answer_api(&self.ctx, &mut self.wire, key, head, body)
        {
            return;
        }
        let response = crate::http::respond(head, body, &self.ctx.http_context());
        self.wire
            .respond_http(&self.ctx, key, response, head.keep_alive);
    }

    /// Takes what other threads sent: every control message, then deliveries up to the
    /// turn's budget (none while intake is paused or held), fanned out together.
    pub(super) fn drain_inbox(&mut self) {
        while let Some(msg) = self.control.try_recv() {
            self.on_msg(msg);
        }
        self.fan.retry_unsubscribes(&self.ctx);
        let budget = if self.intake.stalled(Instant::now(), self.wire.conns.len()) {
            0
        } else {
            INBOX_BATCH
        };
        if self.wire.dirty.is_empty() {
            self.intake.hold = false; // everything taken so far has been written
        }
        for _ in 0..budget {
            if self.intake.hold {
                break;
            }
            match self.data.try_recv() {
                Some(msg) => self.on_msg(msg),
                None => break,
            }
        }
        self.fan
            .fan_out(&self.ctx, &mut self.wire, &mut self.intake);
        self.ctx
            .m()
            .queue_depth
            .store(self.data.len() as u64, Ordering::Relaxed);
    }

    fn on_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver {
                channel,
                frame,
                at,
                offset,
            } => {
                let kind = super::outq::Kind::Delivery;
                let (ctx, intake) = (&self.ctx, &mut self.intake);
                self.fan.deliver(ctx, intake, &channel, frame, kind, offset);
                self.ctx.m().deliver_latency.observe(at.elapsed());
            }
            ShardMsg::Subscribed { channel, epoch } => {
                self.fan
                    .on_subscribed(&self.ctx, &mut self.wire, &channel, epoch)
            }
            // The broker connection was lost: local channels wait for a new confirmation.
            ShardMsg::Unconfirmed => self.fan.subs.unconfirm_all(),
            ShardMsg::UnconfirmedChannel { channel } => self.fan.subs.unconfirm(&channel),
            ShardMsg::Gap { channel } => {
                // History channels repair the gap from history instead.
                if !self.fan.repair(&self.ctx, &channel) {
                    let frame = crate::protocol::reply::gap(&channel);
                    let kind = super::outq::Kind::Keep;
                    let (ctx, intake) = (&self.ctx, &mut self.intake);
                    self.fan.deliver(ctx, intake, &channel, frame, kind, None);
                }
            }
            ShardMsg::Synced {
                channel,
                tag,
                replay,
            } => {
                let (ctx, wire, intake) = (&self.ctx, &mut self.wire, &mut self.intake);
                self.fan
                    .on_synced(ctx, wire, intake, &channel, (tag, replay));
            }
            ShardMsg::Caught {
                channel,
                conn,
                tag,
                replay,
            } => self
                .fan
                .on_caught(&self.ctx, &mut self.wire, &channel, conn, (tag, replay)),
            ShardMsg::Published { conn, id, result } => self.on_published(conn, &id, result),
            ShardMsg::Reply {
                conn,
                frame,
                close_after,
            } => super::api::Api::on_reply(&self.ctx, &mut self.wire, conn, frame, close_after),
            ShardMsg::Disconnect { user } => {
                self.api.disconnect_user(&self.ctx, &mut self.wire, &user)
            }
            ShardMsg::Accept(stream) => self.register(stream),
            ShardMsg::Shutdown => self.begin_shutdown(),
        }
    }
}
