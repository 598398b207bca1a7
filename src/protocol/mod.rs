//! Protocol v1 (docs/protocol.md): client commands, server replies and error codes,
//! channel names, the delivery envelope, and the nodes' control channel. Pure functions over bytes: no I/O.

pub mod channel;
pub mod command;
pub mod control;
pub mod envelope;
pub mod json;
pub mod reply;

pub use command::{parse_command, Command, CommandError};
pub use reply::ErrorCode;
