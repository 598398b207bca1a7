//! Server → client control messages (`subscribed`, `published`, `error`, `gap`, …), each
//! returned as a complete WebSocket text frame. These are per-connection replies, not the
//! fan-out path (see `envelope`).

use bytes::Bytes;

use super::json::push_string;
use crate::offset::Offset;
use crate::ws::frame::{self, OutOp};

/// The error codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownType,
    BadChannel,
    TooLarge,
    Forbidden,
    Unauthorized,
    RateLimited,
    Unavailable,
    SlowConsumer,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::SlowConsumer => "slow_consumer",
        }
    }
}

fn text_frame(body: &[u8]) -> Bytes {
    frame::build(OutOp::Text, body).freeze()
}

fn typed(kind: &str, channel: &str) -> Bytes {
    let mut body = Vec::with_capacity(32 + channel.len());
    body.extend_from_slice(b"{\"type\":\"");
    body.extend_from_slice(kind.as_bytes());
    body.extend_from_slice(b"\",\"channel\":");
    push_string(&mut body, channel);
    body.push(b'}');
    text_frame(&body)
}

/// `{"type":"subscribed","channel":C}`
pub fn subscribed(channel: &str) -> Bytes {
    typed("subscribed", channel)
}

/// `{"type":"subscribed","channel":C,"offset":O}`: a history channel, at offset O.
pub fn subscribed_at(channel: &str, offset: &Offset) -> Bytes {
    let mut body = Vec::with_capacity(96 + channel.len());
    body.extend_from_slice(b"{\"type\":\"subscribed\",\"channel\":");
    push_string(&mut body, channel);
    body.extend_from_slice(b",\"offset\":\"");
    offset.write_to(&mut body);
    body.extend_from_slice(b"\"}");
    text_frame(&body)
}

/// The body of a history answer, `{"type":"history","channel":C,"messages":[{"data":D,
/// "offset":O},...][,"id":X]}` (D verbatim when it is JSON, else a JSON string);
/// `ws` wraps it in a text frame, else it is the HTTP body (without `"type"`).
pub fn history<'a>(
    channel: &str,
    messages: impl Iterator<Item = (Offset, &'a [u8])>,
    id: Option<&str>,
    ws: bool,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + channel.len());
    body.extend_from_slice(if ws {
        &b"{\"type\":\"history\",\"channel\":"[..]
    } else {
        &b"{\"channel\":"[..]
    });
    push_string(&mut body, channel);
    body.extend_from_slice(b",\"messages\":[");
    for (n, (offset, data)) in messages.enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"data\":");
        if super::json::is_valid(data) {
            body.extend_from_slice(data);
        } else {
            push_string(&mut body, &String::from_utf8_lossy(data));
        }
        body.extend_from_slice(b",\"offset\":\"");
        offset.write_to(&mut body);
        body.extend_from_slice(b"\"}");
    }
    body.push(b']');
    if let Some(id) = id {
        body.extend_from_slice(b",\"id\":");
        body.extend_from_slice(id.as_bytes());
    }
    body.push(b'}');
    body
}

/// A history answer as a WebSocket text frame.
pub fn history_frame(body: &[u8]) -> Bytes {
    text_frame(body)
}

/// `{"type":"unsubscribed","channel":C}`
pub fn unsubscribed(channel: &str) -> Bytes {
    typed("unsubscribed", channel)
}

/// `{"type":"gap","channel":C}`: messages on C may have been missed.
pub fn gap(channel: &str) -> Bytes {
    typed("gap", channel)
}

/// `{"type":"authenticated","sub":S,"exp":E}`: a token was accepted (or refreshed).
pub fn authenticated(sub: &str, exp: u64) -> Bytes {
    let mut body = Vec::with_capacity(48 + sub.len());
    body.extend_from_slice(b"{\"type\":\"authenticated\",\"sub\":");
    push_string(&mut body, sub);
    body.extend_from_slice(format!(",\"exp\":{exp}}}").as_bytes());
    text_frame(&body)
}

/// `{"type":"published","id":X}` with X the raw JSON the client sent.
pub fn published(id: &str, offset: Option<&Offset>) -> Bytes {
    let mut body = Vec::with_capacity(80 + id.len());
    body.extend_from_slice(b"{\"type\":\"published\",\"id\":");
    body.extend_from_slice(id.as_bytes());
    if let Some(offset) = offset {
        body.extend_from_slice(b",\"offset\":\"");
        offset.write_to(&mut body);
        body.push(b'"');
    }
    body.push(b'}');
    text_frame(&body)
}

/// `{"type":"error","code":…,"message":…[,"id":X][,"channel":C]}`
pub fn error(code: ErrorCode, message: &str, id: Option<&str>, channel: Option<&str>) -> Bytes {
    let mut body = Vec::with_capacity(64 + message.len());
    body.extend_from_slice(b"{\"type\":\"error\",\"code\":\"");
    body.extend_from_slice(code.as_str().as_bytes());
    body.extend_from_slice(b"\",\"message\":");
    push_string(&mut body, message);
    if let Some(id) = id {
        body.extend_from_slice(b",\"id\":");
        body.extend_from_slice(id.as_bytes());
    }
    if let Some(channel) = channel {
        body.extend_from_slice(b",\"channel\":");
        push_string(&mut body, channel);
    }
    body.push(b'}');
    text_frame(&body)
}

/// The body `{"type":"presence","user":U,"online":B,"connections":[…]}`, the connection
/// objects given as raw JSON (shared by the WebSocket and the HTTP answer).
pub fn presence_body(user: &str, connections: &[Box<str>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + connections.iter().map(|c| c.len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"type\":\"presence\",\"user\":");
    push_string(&mut body, user);
    body.extend_from_slice(if connections.is_empty() {
        b",\"online\":false,\"connections\":["
    } else {
        b",\"online\":true,\"connections\":["
    });
    for (i, c) in connections.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(c.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &Bytes) -> serde_json::Value {
        serde_json::from_slice(&frame[2..]).unwrap()
    }

    #[test]
    fn replies_are_valid_json_frames() {
        assert_eq!(
            body(&subscribed("a\"b")),
            serde_json::json!({"type":"subscribed","channel":"a\"b"})
        );
        assert_eq!(
            body(&unsubscribed("x")),
            serde_json::json!({"type":"unsubscribed","channel":"x"})
        );
        assert_eq!(
            body(&gap("x")),
            serde_json::json!({"type":"gap","channel":"x"})
        );
        assert_eq!(
            body(&published("\"q\"", None)),
            serde_json::json!({"type":"published","id":"q"})
        );
        assert_eq!(
            body(&error(
                ErrorCode::BadChannel,
                "bad \"name\"",
                Some("3"),
                Some("c")
            )),
            serde_json::json!({"type":"error","code":"bad_channel","message":"bad \"name\"","id":3,"channel":"c"})
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&presence_body(
                "u",
                &[r#"{"serverId":"s"}"#.into()]
            ))
            .unwrap(),
            serde_json::json!({"type":"presence","user":"u","online":true,"connections":[{"serverId":"s"}]})
        );
    }
}
