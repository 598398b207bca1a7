//! The HTTP API and admission rules as pure functions (no I/O, no shard state): parsing
//! `POST /api/publish` bodies, matching `/api/users/{U}/connections`, the API-key and
//! `Origin` checks and percent-decoding (JSON responses are built by `http::response`). The shard side that uses them
//! lives in `shard/api.rs`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::Limits;

/// One message of a publish request.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish {
    pub channel: Box<str>,
    /// The raw JSON of `data`, byte for byte as the client sent it.
    pub payload: Bytes,
}

/// A refused request: HTTP status and a short reason.
pub type Refusal = (u16, &'static str);

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Parses a publish body: one `{"channel":C,"data":D}` object, or a JSON array of them
/// (a batch, published in order). `data` is kept verbatim.
pub fn parse_publish(body: &[u8], limits: &Limits) -> Result<Vec<Publish>, Refusal> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let messages: Vec<Message<'_>> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|_| {
            (
                400,
                "body must be a JSON array of {\"channel\",\"data\"} objects",
            )
        })?,
        Some(b'{') => vec![serde_json::from_slice(body)
            .map_err(|_| (400, "body must be a JSON object {\"channel\":C,\"data\":D}"))?],
        _ => {
            return Err((
                400,
                "body must be JSON: {\"channel\":C,\"data\":D} or an array",
            ))
        }
    };
    if messages.is_empty() {
        return Err((400, "empty batch"));
    }
    messages
        .into_iter()
        .map(|m| {
            crate::protocol::channel::validate(&m.channel, limits.max_channel_len)
                .map_err(|why| (400, why))?;
            let data = m.data.get();
            if data.len() > limits.max_message {
                return Err((413, "data exceeds the message size limit"));
            }
            Ok(Publish {
                channel: m.channel.into(),
                payload: Bytes::copy_from_slice(data.as_bytes()),
            })
        })
        .collect()
}

/// The user of `/api/users/{U}/connections`, percent-decoded (`+` stays `+` in a path);
/// `None` for other paths. `Some(Err)` when the user segment is not valid.
pub fn user_path(path: &str) -> Option<Result<String, Refusal>> {
    user_segment(path, "/connections")
}

/// The user of `POST /api/users/{U}/disconnect`, decoded and checked like `user_path`.
pub fn disconnect_path(path: &str) -> Option<Result<String, Refusal>> {
    user_segment(path, "/disconnect")
}

/// The decoded, checked `{U}` of `/api/users/{U}<suffix>`.
fn user_segment(path: &str, suffix: &str) -> Option<Result<String, Refusal>> {
    let rest = path.strip_prefix("/api/users/")?;
    let user = rest.strip_suffix(suffix)?;
    if user.contains('/') {
        return Some(Err((404, "no such API endpoint")));
    }
    Some(match percent_decode(user, false) {
        Ok(u) if valid_user(&u) => Ok(u),
        Ok(_) => Err((400, "bad user id")),
        Err(why) => Err((400, why)),
    })
}

/// A history request: `GET /api/channels/{C}/history?limit=N&since=O`.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    pub channel: String,
    pub limit: Option<u32>,
    pub since: Option<crate::offset::Offset>,
}

/// The history request of `/api/channels/{C}/history` (C percent-decoded and checked
/// as a channel name of at most `max_channel` bytes); `None` for other paths.
pub fn history_path(
    path: &str,
    query: Option<&str>,
    max_channel: usize,
) -> Option<Result<HistoryQuery, Refusal>> {
    let rest = path.strip_prefix("/api/channels/")?;
    let channel = rest.strip_suffix("/history")?;
    let parse = || -> Result<HistoryQuery, Refusal> {
        let channel = percent_decode(channel, false).map_err(|why| (400, why))?;
        crate::protocol::channel::validate(&channel, max_channel).map_err(|why| (400, why))?;
        let limit = match query_value(query, "limit").transpose()? {
            None => None,
            Some(l) => Some(
                l.parse::<u32>()
                    .map_err(|_| (400, "limit must be a non-negative integer"))?,
            ),
        };
        let since = match query_value(query, "since").transpose()? {
            None => None,
            Some(o) => Some(
                crate::offset::Offset::parse(&o)
                    .ok_or((400, "since must be an offset this server handed out"))?,
            ),
        };
        Ok(HistoryQuery {
            channel,
            limit,
            since,
        })
    };
    Some(parse())
}

/// A user id is 1 to 256 bytes of UTF-8 without control characters (like a channel).
pub fn valid_user(user: &str) -> bool {
    crate::protocol::channel::validate_name(user, 256).is_ok()
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query strings, as
/// browsers send forms). Refuses a `%` not followed by two hex digits and a result that
/// is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !matches!(bytes.get(i + 1..i + 3), Some([h, l])
                if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
    });
    if bad_escape {
        return Err("bad percent-encoding (% must be followed by two hex digits)");
    }
    let spaced = match plus_is_space {
        true => Cow::Owned(s.replace('+', " ")),
        false => Cow::Borrowed(s),
    };
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| "percent-encoded value is not valid UTF-8")
}

/// The decoded value of query parameter `name` (`application/x-www-form-urlencoded`:
/// `+` is a space, `%XX` a byte of UTF-8), checked as a user id.
pub fn query_param(query: Option<&str>, name: &str) -> Option<Result<String, Refusal>> {
    Some(match query_value(query, name)? {
        Ok(u) if valid_user(&u) => Ok(u),
        Ok(_) => Err((400, "bad user parameter")),
        Err(why) => Err(why),
    })
}

/// The decoded value of query parameter `name`, unchecked (`?token=`).
pub fn query_value(query: Option<&str>, name: &str) -> Option<Result<String, Refusal>> {
    let query = query?;
    let raw = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true).ok()? == name).then_some(v)
    })?;
    Some(percent_decode(raw, true).map_err(|why| (400, why)))
}

/// Whether the request carries the configured API key (constant-time comparison).
/// With no key configured the API is open.
pub fn key_ok(expected: Option<&str>, given: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// The `Origin` policy: an empty list allows any origin; otherwise the origin must be
/// listed (case-insensitive, trailing `/` ignored). Requests without `Origin` come
/// from non-browser clients, which can send any header anyway, and are allowed.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies() {
        let l = Limits::default();
        let one = parse_publish(br#" {"channel":"a","data":{"x": 1.50}} "#, &l).unwrap();
        assert_eq!(one[0].channel.as_ref(), "a");
        assert_eq!(&one[0].payload[..], br#"{"x": 1.50}"#);
        let many = parse_publish(
            br#"[{"channel":"a\u00e9","data":1},{"channel":"b","data":"s"}]"#,
            &l,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].channel.as_ref(), "aé");
        assert_eq!(&many[1].payload[..], b"\"s\"");
        for bad in [
            &b""[..],
            b"nope",
            b"{",
            b"[]",
            br#"{"channel":"a"}"#,
            br#"{"channel":"","data":1}"#,
            br#"{"channel":1,"data":1}"#,
        ] {
            assert_eq!(
                parse_publish(bad, &l).unwrap_err().0,
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let small = Limits {
            max_message: 3,
            ..Limits::default()
        };
        assert_eq!(
            parse_publish(br#"{"channel":"a","data":"long"}"#, &small)
                .unwrap_err()
                .0,
            413
        );
    }

    #[test]
    fn history_paths() {
        let q = history_path(
            "/api/channels/a%2Fb/history",
            Some("limit=5&since=1-2%3A3"),
            256,
        )
        .unwrap()
        .unwrap();
        assert_eq!(q.channel, "a/b");
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.since, crate::offset::Offset::parse("1-2:3"));
        assert!(history_path("/api/channels/a/other", None, 256).is_none());
        for (path, query) in [
            ("/api/channels/a/history", Some("limit=-1")),
            ("/api/channels/a/history", Some("since=zz")),
            ("/api/channels/%zz/history", None),
            ("/api/channels//history", None),
        ] {
            assert_eq!(history_path(path, query, 256).unwrap().unwrap_err().0, 400);
        }
    }

    #[test]
    fn paths_params_keys_origins() {
        assert_eq!(
            user_path("/api/users/al%20ice/connections"),
            Some(Ok("al ice".into()))
        );
        assert!(matches!(user_path("/api/users//connections"), Some(Err(_))));
        assert!(matches!(
            user_path("/api/users/%zz/connections"),
            Some(Err(_))
        ));
        assert_eq!(user_path("/api/users/x"), None);
        assert_eq!(
            disconnect_path("/api/users/b%C3%B8b%2Fx/disconnect"),
            Some(Ok("bøb/x".into()))
        );
        assert_eq!(disconnect_path("/api/users/bob/connections"), None);
        assert!(matches!(
            disconnect_path("/api/users/a/b/disconnect"),
            Some(Err((404, _)))
        ));
        assert!(matches!(
            disconnect_path(&format!("/api/users/{}/disconnect", "a".repeat(257))),
            Some(Err((400, _)))
        ));
        assert!(matches!(
            disconnect_path("/api/users/%0A/disconnect"),
            Some(Err((400, _)))
        ));
        assert_eq!(
            query_param(Some("a=1&user=bob%40x"), "user"),
            Some(Ok("bob@x".into()))
        );
        assert_eq!(query_param(Some("a=1"), "user"), None);
        assert_eq!(
            query_param(Some("user=John+Doe"), "user"),
            Some(Ok("John Doe".into()))
        );
        assert_eq!(
            query_param(Some("x=%zz&us%65r=%C3%A9t%C3%A9+2%2B2"), "user"),
            Some(Ok("été 2+2".into()))
        );
        assert_eq!(
            query_param(Some("user=%FF"), "user"),
            Some(Err((400, "percent-encoded value is not valid UTF-8")))
        );
        assert!(matches!(
            query_param(Some("user=a%2"), "user"),
            Some(Err(_))
        ));
        assert_eq!(
            user_path("/api/users/a+b/connections"),
            Some(Ok("a+b".into()))
        );
        assert!(matches!(query_param(Some("user="), "user"), Some(Err(_))));
        assert!(key_ok(None, None));
        assert!(key_ok(Some("k1"), Some("k1")));
        assert!(!key_ok(Some("k1"), Some("k2")));
        assert!(!key_ok(Some("k1"), Some("k1x")));
        assert!(!key_ok(Some("k1"), None));
        let allowed = vec!["https://a.example".to_string()];
        assert!(origin_allowed(&allowed, Some("https://A.example/")));
        assert!(!origin_allowed(&allowed, Some("https://evil.example")));
        assert!(origin_allowed(&allowed, None));
        assert!(origin_allowed(&[], Some("anything")));
    }
}
