//! The WebSocket layer: the HTTP upgrade handshake, RFC 6455 framing and RFC 7692
//! permessage-deflate (`deflate`).
//! Pure code over byte buffers: no sockets, no clocks.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod inbound;

/// Largest message on the echo path (`--echo-path`, conformance tests send up to 16 MiB).
pub const ECHO_MAX_MESSAGE: usize = 16 * 1024 * 1024;
