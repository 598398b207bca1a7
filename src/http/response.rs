//! Every HTTP response the node writes is built here: the plain and JSON forms, the
//! reason phrases, and the keep-alive rewrite. Builders only: no I/O, no decisions about
//! whether a connection stays open (the shard makes those).

use crate::protocol::json::push_string;

/// Turns a response built by `http_response` (which says `Connection: close`) into one
/// that keeps the connection open. Only the head is looked at.
pub fn set_keep_alive(response: &mut Vec<u8>) {
    const CLOSE: &[u8] = b"\r\nConnection: close\r\n";
    const KEEP: &[u8] = b"\r\nConnection: keep-alive\r\n";
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 2);
    if let Some(at) = response[..head_end]
        .windows(CLOSE.len())
        .position(|w| w == CLOSE)
    {
        response.splice(at..at + CLOSE.len(), KEEP.iter().copied());
    }
}

/// A complete HTTP response that closes the connection (see `set_keep_alive`).
pub fn http_response(status: u16, content_type: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response whose body is one line of text.
pub fn text_response(status: u16, text: &str) -> Vec<u8> {
    let extra = if status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    http_response(
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n").as_bytes(),
        extra,
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A complete JSON response (closes the connection).
pub fn json_response(status: u16, body: &[u8], extra: &str) -> Vec<u8> {
    http_response(status, "application/json", body, extra)
}

/// `{"error":REASON}` with `status`.
pub fn json_error(status: u16, reason: &str) -> Vec<u8> {
    let mut body = b"{\"error\":".to_vec();
    push_string(&mut body, reason);
    body.extend_from_slice(b"}\n");
    let extra = match status {
        401 => "WWW-Authenticate: Bearer\r\n",
        _ => "",
    };
    json_response(status, &body, extra)
}

/// 405 with the `Allow` header.
pub fn method_not_allowed(allow: &str) -> Vec<u8> {
    json_response(
        405,
        b"{\"error\":\"method not allowed\"}\n",
        &format!("Allow: {allow}\r\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_rewrites_the_head_only() {
        let mut r = http_response(200, "text/plain", b"Connection: close\r\n", "");
        set_keep_alive(&mut r);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\nConnection: close\r\n"),
            "body untouched"
        );
    }
}
