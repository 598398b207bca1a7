//! The read side of a shard: drains a readable socket into the shard's one shared read
//! buffer, and feeds the bytes to the request-head parser or the WebSocket decoder. A
//! connection keeps bytes of its own only while a frame or request is incomplete (or,
//! bounded, while an HTTP answer it waits for is pending). A peer that closes its side
//! still gets what it is owed: the socket is dropped once that is written.

use std::io::{ErrorKind, Read};

use super::conn::Phase;
use super::{Shard, READS_PER_EVENT};
use crate::ws::handshake::{self, Parsed};
use crate::ws::inbound::Fail;

impl Shard {
    /// Reads until the socket would block (or the read budget is spent). A read that
    /// fills less than the buffer has taken everything the kernel held, so the loop stops
    /// there without the extra `read` that would only say `WouldBlock` (what tokio does
    /// too): mio's edge-triggered registration reports the next bytes as a new event.
    /// `until_eof` (the event also said the peer closed, or an error) reads on to the end.
    pub(super) fn on_readable(&mut self, key: usize, until_eof: bool) {
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
                    if conn.phase == Phase::Closing {
                        continue; // draining what a closing peer still sends
                    }
                    conn.last_seen = self.now;
                    conn.ping_outstanding = false;
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

    /// Consumes freshly read bytes.
    fn ingest(&mut self, key: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Handshake | Phase::HttpBody | Phase::HttpWait => {
                // Bytes pipelined behind a request still being answered wait, bounded.
                let cap = self.config.limits.max_request_head + self.config.limits.max_request_body;
                if conn.inbuf.len() + data.len() > cap {
                    self.close(key);
                    return;
                }
                conn.inbuf.extend_from_slice(data);
                if conn.phase != Phase::HttpWait && conn.outq.is_empty() {
                    self.advance_request(key);
                }
            }
            Phase::Open if conn.inbuf.is_empty() => {
                let used = self.feed(key, data);
                if used < data.len() {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.inbuf.extend_from_slice(&data[used..]);
                    }
                }
            }
            Phase::Open => {
                conn.inbuf.extend_from_slice(data);
                let mut pending = std::mem::take(&mut conn.inbuf);
                let used = self.feed(key, &mut pending);
                pending.drain(..used);
                if let Some(conn) = self.conns.get_mut(key) {
                    if !pending.is_empty() {
                        pending.shrink_to(pending.len().max(256));
                        conn.inbuf = pending;
                    }
                }
            }
            Phase::Closing => {}
        }
    }

    /// Runs the WebSocket decoder over `buf`; returns the bytes consumed.
    fn feed(&mut self, key: usize, buf: &mut [u8]) -> usize {
        let Some(conn) = self.conns.get_mut(key) else {
            return buf.len();
        };
        let mut inbound = std::mem::take(&mut conn.inbound);
        let max = if conn.echo {
            crate::ws::ECHO_MAX_MESSAGE
        } else {
            self.config.limits.max_message
        };
        let result = inbound.feed(buf, max, &mut |msg| self.on_message(key, msg));
        let Some(conn) = self.conns.get_mut(key) else {
            return buf.len();
        };
        conn.inbound = inbound;
        match result {
            Ok(used) => used,
            Err(fail) => {
                self.fail(key, fail);
                buf.len()
            }
        }
    }

    /// A protocol violation: send the close code and drop the connection once flushed.
    pub(super) fn fail(&mut self, key: usize, fail: Fail) {
        self.close_ws(key, fail.code, fail.reason);
    }

    /// The peer closed its side (a read returned 0). What it is owed (a response, a
    /// close frame, replies) is still written before the socket is dropped; a request
    /// waiting for another thread's answer gets that answer first.
    fn peer_closed(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.read_closed = true;
        conn.keep_alive = false;
        match conn.phase {
            Phase::HttpWait => {}
            _ if conn.outq.is_empty() => self.close(key),
            Phase::Closing => {}
            _ => {
                conn.phase = Phase::Closing;
                conn.inbuf = Vec::new();
                self.mark_dirty(key);
            }
        }
    }

    /// Parses the request head (and body) accumulated so far and answers it. A
    /// keep-alive connection's next request is parsed once this answer is written.
    pub(super) fn advance_request(&mut self, key: usize) {
        let limits = &self.config.limits;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.inbuf.is_empty() {
            return;
        }
        if conn.phase == Phase::HttpBody {
            let need = conn
                .pending_http
                .as_ref()
                .and_then(|h| h.content_length)
                .unwrap_or(0);
            if conn.inbuf.len() >= need {
                if let Some(head) = conn.pending_http.take() {
                    let body: Vec<u8> = conn.inbuf.drain(..need).collect();
                    self.answer_http(key, &head, &body);
                }
            }
            return;
        }
        let head = match handshake::parse(&conn.inbuf, limits.max_request_head) {
            Parsed::Incomplete => return,
            Parsed::Reject(status, why) => {
                self.respond_http(
                    key,
                    crate::http::response::text_response(status, why),
                    false,
                );
                return;
            }
            Parsed::Request(head) => head,
        };
        conn.inbuf.drain(..head.head_len);
        if let Some(accept) = head.ws_accept.as_deref() {
            if let Err((status, why)) = self.check_upgrade(&head) {
                self.respond_http(
                    key,
                    crate::http::response::text_response(status, why),
                    false,
                );
                return;
            }
            let reply = handshake::switching_protocols(accept);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            conn.echo = self.config.echo_path.as_deref() == Some(head.path.as_str());
            conn.phase = Phase::Open;
            conn.outq.push(reply.into());
            let rest = std::mem::take(&mut conn.inbuf);
            self.mark_dirty(key);
            self.presence_open(key, &head);
            if !rest.is_empty() {
                let mut rest = rest;
                self.ingest(key, &mut rest);
            }
            return;
        }
        let need = head.content_length.unwrap_or(0);
        if need > limits.max_request_body {
            self.respond_http(
                key,
                crate::http::response::text_response(413, "request body too large"),
                false,
            );
            return;
        }
        if conn.inbuf.len() >= need {
            let body: Vec<u8> = conn.inbuf.drain(..need).collect();
            self.answer_http(key, &head, &body);
        } else {
            conn.phase = Phase::HttpBody;
            conn.pending_http = Some(Box::new(head));
        }
    }

    fn answer_http(&mut self, key: usize, head: &handshake::RequestHead, body: &[u8]) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.keep_alive = head.keep_alive;
        }
        if self.answer_api(key, head, body) {
            return;
        }
        let response = crate::http::respond(head, body, &self.http_context());
        self.respond_http(key, response, head.keep_alive);
    }
}
