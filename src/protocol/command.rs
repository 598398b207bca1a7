//! Client → server commands. Parses one text message into a `Command` that borrows from
//! it (the publish payload is kept byte for byte), or a `CommandError` carrying the code
//! and, when they could be read, the request's `id` and `channel`.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::channel;
use super::reply::ErrorCode;
use crate::offset::Offset;

/// A well-formed client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Subscribe; with `since`, resume after that history offset.
    Subscribe {
        channel: Cow<'a, str>,
        since: Option<Offset>,
    },
    Unsubscribe {
        channel: Cow<'a, str>,
    },
    Publish {
        channel: Cow<'a, str>,
        /// The `data` value exactly as the client wrote it.
        data: &'a str,
        /// The raw JSON of `id` (a string or a number), when given.
        id: Option<&'a str>,
    },
    Presence {
        user: Cow<'a, str>,
    },
    /// Authenticate, or refresh the token (`{"type":"auth","token":"..."}`).
    Auth {
        token: Cow<'a, str>,
    },
    /// The last `limit` messages of a history channel, or those after `since`.
    History {
        channel: Cow<'a, str>,
        limit: Option<u32>,
        since: Option<Offset>,
        id: Option<&'a str>,
    },
}

/// A command that cannot be carried out, with what is known of it for the error reply.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandError<'a> {
    pub code: ErrorCode,
    pub message: &'static str,
    pub id: Option<&'a str>,
    pub channel: Option<Cow<'a, str>>,
}

/// The fields of a command, each kept raw. A field given as `null` is `Some("null")`,
/// not `None`: `"data": null` is a payload like any other, and `"id": null` is refused.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` included); absent fields get
/// `None` from `default`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn with<'a>(id: Option<&'a str>, mut e: CommandError<'a>) -> CommandError<'a> {
    e.id = id;
    e
}

fn err<'a>(code: ErrorCode, message: &'static str) -> CommandError<'a> {
    CommandError {
        code,
        message,
        id: None,
        channel: None,
    }
}

/// A JSON string value, borrowed when it has no escapes.
fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    if let Ok(s) = serde_json::from_str::<&str>(text) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Parses one client text message. `max_channel` is the channel-name limit.
pub fn parse_command(text: &str, max_channel: usize) -> Result<Command<'_>, CommandError<'_>> {
    if !text.trim_start().starts_with('{') {
        return Err(if super::json::is_valid(text.as_bytes()) {
            err(ErrorCode::BadRequest, "message must be a JSON object")
        } else {
            err(ErrorCode::BadJson, "message is not valid JSON")
        });
    }
    let wire: Wire<'_> = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(err(ErrorCode::BadJson, "message is not valid JSON"))
        }
        Err(_) => {
            return Err(err(
                ErrorCode::BadRequest,
                "malformed command (duplicate field?)",
            ))
        }
    };
    let id = match wire.id {
        None => None,
        Some(raw) => {
            let t = raw.get();
            let ok = t.starts_with('"')
                || t.starts_with('-')
                || t.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(err(
                    ErrorCode::BadRequest,
                    "id must be a string or a number",
                ));
            }
            Some(t)
        }
    };
    let kind = match wire.kind.map(as_string) {
        None => return Err(with(id, err(ErrorCode::BadRequest, "missing type"))),
        Some(None) => {
            return Err(with(
                id,
                err(ErrorCode::BadRequest, "type must be a string"),
            ))
        }
        Some(Some(k)) => k,
    };
    if kind == "presence" {
        return match wire.user.and_then(as_string) {
            Some(user) if !user.is_empty() && user.len() <= max_channel => {
                Ok(Command::Presence { user })
            }
            _ => Err(with(
                id,
                err(ErrorCode::BadRequest, "presence needs a user string"),
            )),
        };
    }
    if kind == "auth" {
        return match wire.token.and_then(as_string) {
            Some(token) if !token.is_empty() => Ok(Command::Auth { token }),
            _ => Err(with(
                id,
                err(ErrorCode::BadRequest, "auth needs a token string"),
            )),
        };
    }
    if !matches!(&*kind, "subscribe" | "unsubscribe" | "publish" | "history") {
        return Err(with(
            id,
            err(ErrorCode::UnknownType, "unknown message type"),
        ));
    }
    let channel = match wire.channel {
        None => return Err(with(id, err(ErrorCode::BadChannel, "missing channel"))),
        Some(raw) => match as_string(raw) {
            None => {
                return Err(with(
                    id,
                    err(ErrorCode::BadChannel, "channel must be a string"),
                ))
            }
            Some(c) => c,
        },
    };
    if let Err(why) = channel::validate(&channel, max_channel) {
        let mut e = with(id, err(ErrorCode::BadChannel, why));
        if channel.len() <= max_channel {
            e.channel = Some(channel);
        }
        return Err(e);
    }
    let since = match wire
        .since
        .map(|raw| as_string(raw).and_then(|s| Offset::parse(&s)))
    {
        None => None,
        Some(Some(offset)) => Some(offset),
        Some(None) => {
            return Err(CommandError {
                channel: Some(channel),
                ..with(
                    id,
                    err(
                        ErrorCode::BadRequest,
                        "since must be an offset string this server handed out",
                    ),
                )
            })
        }
    };
    match &*kind {
        "subscribe" => Ok(Command::Subscribe { channel, since }),
        "unsubscribe" => Ok(Command::Unsubscribe { channel }),
        "history" => {
            let limit = match wire.limit.map(|raw| raw.get().parse::<u32>()) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    return Err(CommandError {
                        channel: Some(channel),
                        ..with(
                            id,
                            err(
                                ErrorCode::BadRequest,
                                "limit must be a non-negative integer",
                            ),
                        )
                    })
                }
            };
            Ok(Command::History {
                channel,
                limit,
                since,
                id,
            })
        }
        _ => match wire.data {
            Some(data) => Ok(Command::Publish {
                channel,
                data: data.get(),
                id,
            }),
            None => Err(CommandError {
                channel: Some(channel),
                ..with(id, err(ErrorCode::BadRequest, "publish needs data"))
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Command<'_> {
        parse_command(text, 256).unwrap()
    }

    fn code(text: &str) -> ErrorCode {
        parse_command(text, 256).unwrap_err().code
    }

    #[test]
    fn parses_the_three_commands() {
        assert_eq!(
            ok(r#"{"type":"subscribe","channel":"news"}"#),
            Command::Subscribe {
                channel: "news".into(),
                since: None
            }
        );
        assert_eq!(
            ok(r#" {"channel":"a\"b","type":"unsubscribe","extra":1} "#),
            Command::Unsubscribe {
                channel: "a\"b".into()
            }
        );
        assert_eq!(
            ok(r#"{"type":"publish","channel":"c","data": {"x": [1, 2.50]} ,"id":7}"#),
            Command::Publish {
                channel: "c".into(),
                data: r#"{"x": [1, 2.50]}"#,
                id: Some("7")
            }
        );
        assert_eq!(
            ok(r#"{"type":"presence","user":"u1"}"#),
            Command::Presence { user: "u1".into() }
        );
        assert_eq!(
            ok(r#"{"type":"auth","token":"a.b.c"}"#),
            Command::Auth {
                token: "a.b.c".into()
            }
        );
        assert_eq!(code(r#"{"type":"auth"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"auth","token":""}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"auth","token":1}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn null_is_data_but_not_an_id() {
        assert_eq!(
            ok(r#"{"type":"publish","channel":"c","data":null}"#),
            Command::Publish {
                channel: "c".into(),
                data: "null",
                id: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"publish","channel":"c","data": null ,"id":"n"}"#),
            Command::Publish {
                channel: "c".into(),
                data: "null",
                id: Some("\"n\"")
            }
        );
        for text in [
            r#"{"type":"publish","channel":"c","data":1,"id":null}"#,
            r#"{"type":"subscribe","channel":"c","id":null}"#,
            r#"{"type":null,"channel":"c"}"#,
            r#"{"type":"presence","user":null}"#,
        ] {
            assert_eq!(code(text), ErrorCode::BadRequest, "{text}");
        }
        assert_eq!(
            code(r#"{"type":"subscribe","channel":null}"#),
            ErrorCode::BadChannel
        );
    }

    #[test]
    fn error_codes() {
        let cases = [
            ("not json", ErrorCode::BadJson),
            (r#"{"type":"subscribe""#, ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadRequest),
            ("\"str\"", ErrorCode::BadRequest),
            (r#"{"channel":"a"}"#, ErrorCode::BadRequest),
            (r#"{"type":5,"channel":"a"}"#, ErrorCode::BadRequest),
            (r#"{"type":"dance","channel":"a"}"#, ErrorCode::UnknownType),
            (r#"{"type":"subscribe"}"#, ErrorCode::BadChannel),
            (r#"{"type":"subscribe","channel":7}"#, ErrorCode::BadChannel),
            (
                r#"{"type":"subscribe","channel":""}"#,
                ErrorCode::BadChannel,
            ),
            (
                r#"{"type":"subscribe","channel":"a\nb"}"#,
                ErrorCode::BadChannel,
            ),
            (r#"{"type":"publish","channel":"a"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"publish","channel":"a","data":1,"id":{}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"publish","type":"publish","channel":"a","data":1}"#,
                ErrorCode::BadRequest,
            ),
        ];
        for (text, expect) in cases {
            assert_eq!(code(text), expect, "{text}");
        }
        let long = format!(r#"{{"type":"subscribe","channel":"{}"}}"#, "x".repeat(257));
        assert_eq!(code(&long), ErrorCode::BadChannel);
    }

    #[test]
    fn since_and_history() {
        assert_eq!(
            ok(r#"{"type":"subscribe","channel":"c","since":"5-1:9"}"#),
            Command::Subscribe {
                channel: "c".into(),
                since: Offset::parse("5-1:9")
            }
        );
        assert_eq!(
            ok(r#"{"type":"history","channel":"c","limit":3,"id":"h"}"#),
            Command::History {
                channel: "c".into(),
                limit: Some(3),
                since: None,
                id: Some("\"h\"")
            }
        );
        for text in [
            r#"{"type":"subscribe","channel":"c","since":"nope"}"#,
            r#"{"type":"subscribe","channel":"c","since":5}"#,
            r#"{"type":"history","channel":"c","limit":-1}"#,
            r#"{"type":"history","channel":"c","limit":"3"}"#,
            r#"{"type":"history","channel":"c","limit":1.5}"#,
        ] {
            assert_eq!(code(text), ErrorCode::BadRequest, "{text}");
        }
        assert_eq!(code(r#"{"type":"history"}"#), ErrorCode::BadChannel);
    }

    #[test]
    fn errors_keep_id_and_channel() {
        let e = parse_command(r#"{"type":"publish","channel":"c","id":"q1"}"#, 256).unwrap_err();
        assert_eq!(e.id, Some("\"q1\""));
        assert_eq!(e.channel.as_deref(), Some("c"));
    }
}
