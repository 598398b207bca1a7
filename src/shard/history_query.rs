//! What clients ask of history directly: the `history` command, `GET
//! /api/channels/{C}/history`, and the per-connection allowance of history reads (each
//! may read 10,000 messages). The answers come back as `ShardMsg::Reply`. Owns no
//! state: it asks the broker and answers through `Wire`; it never touches a socket.

use std::sync::Arc;

use super::conn::Key;
use super::ctx::Ctx;
use super::output::Wire;
use crate::broker::history::MAX_REPLAY;
use crate::msg::{BrokerCmd, HistoryRead, HistoryTo};
use crate::offset::Offset;
use crate::protocol::ErrorCode;

/// See `config::Tuning`.
const DEFAULT_LIMIT: usize = crate::config::TUNING.default_history_limit;
/// See `config::Tuning`.
const HISTORY_RATE: u32 = crate::config::TUNING.history_rate;

/// Takes one history read from connection `key`'s allowance; false (answered
/// `rate_limited`, counted) when it has none left.
pub fn allowed(ctx: &Ctx, wire: &mut Wire, key: Key, channel: &str, id: Option<&str>) -> bool {
    let now_ms = ctx.clock.ms();
    let Some(conn) = wire.conns.get_mut(key) else {
        return false;
    };
    let limits = conn.limits.get_or_insert_with(Default::default);
    let ok = limits
        .history
        .get_or_insert_with(|| super::admission::Bucket::full(HISTORY_RATE, now_ms))
        .take(HISTORY_RATE, now_ms);
    if !ok {
        ctx.m()
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        wire.simple_error(
            ctx,
            key,
            ErrorCode::RateLimited,
            "too many history reads: at most 20 per second",
            id,
            Some(channel),
        );
    }
    ok
}

/// `{"type":"history",...}` from a client.
pub fn query(
    ctx: &Ctx,
    wire: &mut Wire,
    key: Key,
    channel: &str,
    limit: Option<u32>,
    since: Option<Offset>,
    id: Option<Box<str>>,
) {
    if !ctx.has_history(channel) {
        return wire.simple_error(
            ctx,
            key,
            ErrorCode::BadRequest,
            "this channel keeps no history",
            id.as_deref(),
            Some(channel),
        );
    }
    if !allowed(ctx, wire, key, channel, id.as_deref()) {
        return;
    }
    let Some(conn) = wire.conn_id(key) else {
        return;
    };
    let to = HistoryTo::Client {
        shard: ctx.id,
        conn,
        id,
    };
    let read = client_read(channel, limit, since, to);
    if let Err(BrokerCmd::History(read)) = ctx.broker.send(BrokerCmd::History(Box::new(read))) {
        let id = match read.to {
            HistoryTo::Client { id, .. } => id,
            _ => None,
        };
        wire.simple_error(
            ctx,
            key,
            ErrorCode::Unavailable,
            "history is unavailable, try again",
            id.as_deref(),
            Some(channel),
        );
    }
}

/// `GET /api/channels/{C}/history?limit=N&since=O`: the answer comes back as a
/// `Reply`; None when it was asked, else the response to send now.
pub fn http(
    ctx: &Ctx,
    wire: &Wire,
    key: Key,
    channel: &str,
    limit: Option<u32>,
    since: Option<Offset>,
) -> Option<Vec<u8>> {
    use crate::http::response::json_error;
    if !ctx.has_history(channel) {
        return Some(json_error(400, "this channel keeps no history"));
    }
    if let Some(why) = ctx.unplaceable(channel) {
        return Some(json_error(400, why));
    }
    let to = HistoryTo::Http {
        shard: ctx.id,
        conn: wire.conn_id(key)?,
    };
    let read = client_read(channel, limit, since, to);
    if ctx.ask(read) {
        None
    } else {
        Some(json_error(503, "history is unavailable, try again"))
    }
}

/// A read a client asked for (`history` over WebSocket or HTTP): the newest `limit`
/// (default 100), or the first `limit` after `since`; at most `MAX_REPLAY`.
fn client_read(
    channel: &str,
    limit: Option<u32>,
    since: Option<Offset>,
    to: HistoryTo,
) -> HistoryRead {
    HistoryRead {
        channel: Arc::from(channel),
        since,
        upto: None,
        limit: limit.map_or(DEFAULT_LIMIT, |l| l as usize).min(MAX_REPLAY),
        to,
    }
}
