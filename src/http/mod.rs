//! Plain HTTP on the WebSocket port: `/healthz`, `/metrics`, and a clear answer for
//! everything else. Each request gets one complete response (the shard decides whether
//! the connection stays open for the next one).

use std::sync::Arc;

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::ws::handshake::RequestHead;
use response::{http_response, text_response};

pub mod response;

/// What a response may depend on.
pub struct HttpContext<'a> {
    pub config: &'a Config,
    pub metrics: &'a Arc<Metrics>,
    pub health: &'a Arc<Health>,
}

/// Answers one HTTP request (head and complete body). A `HEAD` request gets the head
/// alone (a body would be read as the next response on a kept-alive connection).
pub fn respond(head: &RequestHead, body: &[u8], ctx: &HttpContext<'_>) -> Vec<u8> {
    let mut response = respond_with_body(head, body, ctx);
    if head.method == "HEAD" {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            response.truncate(end + 4);
        }
    }
    response
}

fn respond_with_body(head: &RequestHead, _body: &[u8], ctx: &HttpContext<'_>) -> Vec<u8> {
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") | ("HEAD", "/healthz") => {
            let (ok, detail) = ctx.health.status(ctx.config.redis.is_some());
            let body = format!(
                "{{\"status\":\"{}\",\"detail\":\"{detail}\"}}\n",
                if ok { "ok" } else { "unavailable" }
            );
            http_response(
                if ok { 200 } else { 503 },
                "application/json",
                body.as_bytes(),
                "",
            )
        }
        ("GET", "/metrics") => http_response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            ctx.metrics.render().as_bytes(),
            "",
        ),
        (_, "/healthz") | (_, "/metrics") => text_response(405, "method not allowed"),
        ("GET", _) => text_response(426, "this is a WebSocket endpoint: send an Upgrade request"),
        _ => text_response(404, "not found"),
    }
}
