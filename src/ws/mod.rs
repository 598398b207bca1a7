//! The WebSocket layer: the HTTP upgrade handshake and RFC 6455 framing.
//! Pure code over byte buffers: no sockets, no clocks.

pub mod frame;
pub mod handshake;
pub mod inbound;
