//! The read side of a shard: drains a readable socket into the shard's one shared read
//! buffer, hands the bytes to the connection's `Session` and applies the effects it
//! returns, in order. A peer that closes its side still gets what it is owed: the socket
//! is dropped once that is written.

use std::io::{ErrorKind, Read};
use std::sync::atomic::Ordering;

use super::conn::Key;
use super::conn::Phase;
use super::session::Effect;
use super::{Shard, READS_PER_EVENT};
use crate::ws::handshake::RequestHead;

impl Shard {
    /// Reads until the socket would block (or the read budget is spent). A read that
    /// fills less than the buffer has taken everything the kernel held, so the loop stops
    /// there without the extra `read` that would only say `WouldBlock` (what tokio does
    /// too): mio's edge-triggered registration reports the next bytes as a new event.
    /// `until_eof` (the event also said the peer closed, or an error) reads on to the end.
    pub(super) fn on_readable(&mut self, key: Key, until_eof: bool) {
        let mut buf = std::mem::take(&mut self.read_buf);
        for round in 0.. {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if round == READS_PER_EVENT {
                self.read_again.push(key);
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
                    conn.session.heard(self.clock.coarse());
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
        self.read_buf = buf;
    }

    /// Hands bytes to the connection's session and applies what they cause. Also called
    /// with nothing new to resume buffered input (a pipelined request once the previous
    /// answer is written, frames sent behind an upgrade).
    pub(super) fn ingest(&mut self, key: Key, data: &mut [u8]) {
        let mut at = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let may_parse = conn.outq.is_empty();
            let Some(effect) = conn
                .session
                .poll(data, &mut at, &self.config.limits, may_parse)
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
                let bits = self.conns.get(key).map_or(0, |c| c.session.deflate());
                let frame = match bits {
                    0 => frame,
                    bits => crate::ws::deflate::compress_for(&frame, bits),
                };
                self.queue(key, frame)
            }
            Effect::Error { frame, text } => {
                let m = &self.metrics.shards[self.id.index()];
                if text {
                    m.messages_in.fetch_add(1, Ordering::Relaxed);
                }
                m.client_errors.fetch_add(1, Ordering::Relaxed);
                self.queue(key, frame);
            }
            Effect::Command(cmd) => {
                self.metrics.shards[self.id.index()]
                    .messages_in
                    .fetch_add(1, Ordering::Relaxed);
                self.on_command(key, cmd);
            }
            Effect::Close { code, reason } => self.queue_close_frame(key, code, reason),
            Effect::Upgrade(head) => self.upgrade(key, &head),
            Effect::Request(head, body) => self.answer_http(key, &head, &body),
            Effect::Reject(response) => self.respond_http(key, response, false),
            Effect::Drop => self.close(key),
        }
    }

    /// The peer closed its side (a read returned 0). What it is owed (a response, a
    /// close frame, replies) is still written before the socket is dropped; a request
    /// waiting for another thread's answer gets that answer first.
    fn peer_closed(&mut self, key: Key) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.session.peer_closed();
        match conn.phase() {
            Phase::HttpWait => {}
            _ if conn.outq.is_empty() => self.close(key),
            Phase::Closing => {}
            _ => {
                conn.session.close();
                self.mark_dirty(key);
            }
        }
    }

    /// A WebSocket upgrade: admitted (101, presence, then the frames sent behind it) or
    /// refused with an HTTP answer.
    fn upgrade(&mut self, key: Key, head: &RequestHead) {
        let echo = self.config.echo_path.as_deref() == Some(head.path.as_str());
        let admitted = self
            .check_upgrade(head)
            .and_then(|()| self.upgrade_token(head, echo))
            .and_then(|grant| self.admit_ip(key).map(|()| grant))
            .and_then(|grant| match &grant {
                Some(g) if !self.admit_user(key, &g.sub) => {
                    Err((429, "too many connections for this user"))
                }
                _ => Ok(grant),
            });
        let grant = match admitted {
            Ok(grant) => grant,
            Err((status, why)) => {
                let response = crate::http::response::text_response(status, why);
                self.respond_http(key, response, false);
                return;
            }
        };
        // --compression on: permessage-deflate when the client offers one we can honour.
        let deflate = match head.ws_extensions.as_deref() {
            Some(offers) if self.config.compression => crate::ws::deflate::negotiate([offers]),
            _ => None,
        };
        let reply = crate::ws::handshake::switching_protocols(
            head.ws_accept.as_deref().unwrap_or(""),
            deflate.as_ref().map(|d| d.answer.as_str()),
        );
        let (now, unix_now) = (self.clock.coarse(), crate::auth::unix_now());
        let handshake = u32::try_from(self.config.handshake_timeout.as_secs()).unwrap_or(u32::MAX);
        let auth_on = self.admit.auth.is_some() && !echo;
        let Some(conn) = self.conns.get_mut(key) else {
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
                self.mark_dirty(key);
                return;
            }
            None => self.user_param(head),
        };
        self.mark_dirty(key);
        self.presence_open(key, user.as_deref());
    }

    /// With auth on, a token on the upgrade (`?token=` or `Authorization: Bearer`) is
    /// verified now: valid, the connection opens authenticated; invalid, 401 (counted).
    /// Without one the connection opens and must send an auth message.
    fn upgrade_token(
        &self,
        head: &RequestHead,
        echo: bool,
    ) -> Result<Option<crate::auth::Grant>, (u16, &'static str)> {
        let Some(verifier) = self.admit.auth.as_ref().filter(|_| !echo) else {
            return Ok(None);
        };
        let token = match crate::api::query_value(head.query.as_deref(), "token") {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => return Err(self.refused_upgrade(401, "invalid token")),
            None => head.bearer.clone(),
        };
        let Some(token) = token else {
            return Ok(None);
        };
        match verifier.verify(&token, crate::auth::unix_now()) {
            Ok(grant) => Ok(Some(grant)),
            Err(_) => Err(self.refused_upgrade(401, "invalid token")),
        }
    }

    fn refused_upgrade(&self, status: u16, why: &'static str) -> (u16, &'static str) {
        self.metrics.shards[self.id.index()]
            .upgrades_refused
            .fetch_add(1, Ordering::Relaxed);
        (status, why)
    }

    /// `--max-conns-per-ip`: counts this connection under its client address, or
    /// refuses it (429, counted).
    fn admit_ip(&mut self, key: Key) -> Result<(), (u16, &'static str)> {
        let max = self.config.limits.max_conns_per_ip;
        if max == 0 {
            return Ok(());
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let Ok(ip) = conn.stream.peer_addr().map(|a| a.ip()) else {
            return Ok(()); // the peer is already gone; the close will follow
        };
        if !self.admit.per_ip.acquire(ip, max) {
            self.metrics.shards[self.id.index()]
                .upgrades_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err((429, "too many connections from this address"));
        }
        conn.limits.get_or_insert_with(Default::default).ip = Some(ip);
        Ok(())
    }

    /// `--max-conns-per-user`: counts this connection under its authenticated user, or
    /// refuses it (counted; the caller answers). A refused connection is closed, which
    /// releases whatever else it was counted under.
    pub(super) fn admit_user(&mut self, key: Key, sub: &str) -> bool {
        let max = self.config.limits.max_conns_per_user;
        if max == 0 {
            return true;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !self.admit.per_user.acquire(sub.into(), max) {
            self.metrics.shards[self.id.index()]
                .upgrades_refused
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        conn.limits.get_or_insert_with(Default::default).user = Some(sub.into());
        true
    }

    fn answer_http(&mut self, key: Key, head: &RequestHead, body: &[u8]) {
        if self.answer_api(key, head, body) {
            return;
        }
        let response = crate::http::respond(head, body, &self.http_context());
        self.respond_http(key, response, head.keep_alive);
    }
}
