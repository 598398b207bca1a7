//! The HTTP/1.1 request head that opens every connection: either a WebSocket upgrade
//! (RFC 6455 §4.2, accept key derived by tungstenite) or a plain HTTP request for the
//! HTTP endpoints. Parsing only: the caller owns the socket and the buffer.

use tungstenite::handshake::derive_accept_key;

/// Most headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 32;

/// A parsed request head, owned so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    pub origin: Option<String>,
    pub content_length: Option<usize>,
    /// `Authorization: Bearer K` or `X-Api-Key: K`.
    pub api_key: Option<String>,
    /// `Authorization: Bearer T` only (a connection token on an upgrade).
    pub bearer: Option<String>,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// Set for a valid WebSocket upgrade: the `Sec-WebSocket-Accept` value.
    pub ws_accept: Option<String>,
    /// Every `Sec-WebSocket-Extensions` header, in order, joined with ", " (the offers
    /// `ws::deflate::negotiate` reads).
    pub ws_extensions: Option<String>,
    /// The client allows the connection to stay open after the response (HTTP/1.1
    /// without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
}

/// Outcome of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Incomplete,
    Request(Box<RequestHead>),
    /// Answer with this status and close.
    Reject(u16, &'static str),
}

/// Parses a request head from `buf` (limited to `max_head` bytes).
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Parsed::Reject(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(431, "too many headers"),
        Err(_) => return Parsed::Reject(400, "malformed HTTP request"),
    };
    if head_len > max_head {
        return Parsed::Reject(431, "request head too large");
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut head = RequestHead {
        method,
        path,
        query,
        origin: None,
        content_length: None,
        api_key: None,
        bearer: None,
        head_len,
        ws_accept: None,
        ws_extensions: None,
        keep_alive: req.version == Some(1),
    };
    let (mut upgrade, mut connection_upgrade, mut version, mut key) = (false, false, None, None);
    for h in req.headers.iter() {
        let value = match std::str::from_utf8(h.value) {
            Ok(v) => v.trim(),
            Err(_) => continue,
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("upgrade") {
                    connection_upgrade = true;
                } else if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            match head.ws_extensions.as_mut() {
                Some(all) => {
                    all.push_str(", ");
                    all.push_str(value);
                }
                None => head.ws_extensions = Some(value.to_string()),
            }
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => head.content_length = Some(n),
                Err(_) => return Parsed::Reject(400, "bad Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(501, "chunked bodies are not supported");
        } else if name.eq_ignore_ascii_case("x-api-key") {
            head.api_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("authorization") {
            // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` works too.
            let bearer = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, k)| k.trim().to_string());
            if let Some(k) = bearer {
                head.api_key = Some(k.clone());
                head.bearer = Some(k);
            }
        }
    }
    if upgrade {
        if head.method != "GET" {
            return Parsed::Reject(400, "WebSocket upgrade must use GET");
        }
        if !connection_upgrade {
            return Parsed::Reject(400, "missing Connection: Upgrade");
        }
        if version.as_deref() != Some("13") {
            return Parsed::Reject(426, "unsupported Sec-WebSocket-Version (need 13)");
        }
        match key {
            Some(k) if valid_key(&k) => head.ws_accept = Some(derive_accept_key(k.as_bytes())),
            _ => return Parsed::Reject(400, "missing or bad Sec-WebSocket-Key"),
        }
    }
    Parsed::Request(Box::new(head))
}

/// A key is 16 random bytes in base64: 24 characters ending in "==".
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The `101 Switching Protocols` answer to an accepted upgrade, with the
/// `Sec-WebSocket-Extensions` answer when an extension was agreed.
pub fn switching_protocols(accept: &str, extensions: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(ext) = extensions {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(ext);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n";

    #[test]
    fn accepts_rfc_sample_upgrade() {
        match parse(UPGRADE.as_bytes(), 8192) {
            Parsed::Request(h) => {
                assert_eq!(h.ws_accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
                assert_eq!(h.path, "/chat");
                assert_eq!(h.query.as_deref(), Some("x=1"));
                assert_eq!(h.origin.as_deref(), Some("http://example.com"));
                assert_eq!(h.head_len, UPGRADE.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_until_blank_line_then_limits_apply() {
        assert_eq!(parse(&UPGRADE.as_bytes()[..40], 8192), Parsed::Incomplete);
        assert_eq!(
            parse(&UPGRADE.as_bytes()[..40], 20),
            Parsed::Reject(431, "request head too large")
        );
    }

    #[test]
    fn rejects_bad_upgrades() {
        let bad_version = UPGRADE.replace("Version: 13", "Version: 8");
        assert!(matches!(
            parse(bad_version.as_bytes(), 8192),
            Parsed::Reject(426, _)
        ));
        let bad_key = UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert!(matches!(
            parse(bad_key.as_bytes(), 8192),
            Parsed::Reject(400, _)
        ));
        let post = UPGRADE.replace("GET", "POST");
        assert!(matches!(
            parse(post.as_bytes(), 8192),
            Parsed::Reject(400, _)
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", 8192),
            Parsed::Reject(400, _)
        ));
    }

    #[test]
    fn plain_http_request_has_no_accept_key() {
        let req = b"POST /api/publish HTTP/1.1\r\nContent-Length: 5\r\nX-Api-Key: k\r\n\r\nhello";
        match parse(req, 8192) {
            Parsed::Request(h) => {
                assert_eq!(h.ws_accept, None);
                assert_eq!(h.content_length, Some(5));
                assert_eq!(h.api_key.as_deref(), Some("k"));
                assert_eq!(h.head_len, req.len() - 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let ka = |req: &str| match parse(req.as_bytes(), 8192) {
            Parsed::Request(h) => h.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let req = format!("GET / HTTP/1.1\r\nAuthorization: {scheme} k1\r\n\r\n");
            match parse(req.as_bytes(), 8192) {
                Parsed::Request(h) => {
                    assert_eq!(h.api_key.as_deref(), Some("k1"), "{scheme}");
                    assert_eq!(h.bearer.as_deref(), Some("k1"), "{scheme}");
                }
                other => panic!("{other:?}"),
            }
        }
        let basic = b"GET / HTTP/1.1\r\nAuthorization: Basic a2V5\r\n\r\n";
        assert!(matches!(parse(basic, 8192), Parsed::Request(h) if h.api_key.is_none()));
    }
}
