//! Plain HTTP on the WebSocket port: `/healthz`, `/metrics`, and a clear answer for
//! everything else. Each request gets one complete response and the connection closes.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::Health;
use crate::ws::handshake::{http_response, text_response, RequestHead};

/// What a response may depend on.
pub struct HttpContext<'a> {
    pub config: &'a Config,
    pub metrics: &'a Arc<Metrics>,
    pub health: &'a Arc<Health>,
}

/// Answers one HTTP request (head and complete body).
pub fn respond(head: &RequestHead, _body: &[u8], ctx: &HttpContext<'_>) -> Vec<u8> {
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
