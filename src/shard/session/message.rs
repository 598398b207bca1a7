//! What one decoded client message asks for: a command (owned, moved on to the broker),
//! an error reply, a pong or echo, or a close. Pure translation; no state.

use bytes::Bytes;

use super::{Cmd, Effect};
use crate::config::Limits;
use crate::protocol::{parse_command, reply, Command, CommandError, ErrorCode};
use crate::ws::frame::{self, OutOp};
use crate::ws::inbound::Message;

/// What one decoded message asks for (a pong asks for nothing).
pub(super) fn message_effect(msg: Message<'_>, echo: bool, limits: &Limits) -> Option<Effect> {
    Some(match msg {
        Message::Text(text) if echo => {
            Effect::Send(frame::build(OutOp::Text, text.as_bytes()).freeze())
        }
        Message::Binary(data) if echo => Effect::Send(frame::build(OutOp::Binary, data).freeze()),
        Message::Text(text) => match parse_command(text, limits.max_channel_len) {
            Ok(cmd) => Effect::Command(owned(cmd)),
            Err(e) => Effect::Error {
                frame: error_frame(e),
                text: true,
            },
        },
        Message::Binary(_) => Effect::Error {
            frame: reply::error(
                ErrorCode::BadRequest,
                "binary frames are not supported: send JSON text",
                None,
                None,
            ),
            text: false,
        },
        Message::TooLarge => Effect::Error {
            frame: reply::error(
                ErrorCode::TooLarge,
                "message exceeds the size limit",
                None,
                None,
            ),
            text: false,
        },
        Message::Ping(payload) => Effect::Send(frame::build(OutOp::Pong, payload).freeze()),
        Message::Pong => return None,
        Message::Close(close) => {
            let code = close.map(|(c, _)| c).unwrap_or(1000);
            let code = if code == 1005 { 1000 } else { code };
            Effect::Close { code, reason: "" }
        }
    })
}

fn error_frame(e: CommandError<'_>) -> Bytes {
    reply::error(e.code, e.message, e.id, e.channel.as_deref())
}

fn owned(cmd: Command<'_>) -> Cmd {
    match cmd {
        Command::Subscribe { channel, since } => Cmd::Subscribe(channel.into(), since),
        Command::Unsubscribe { channel } => Cmd::Unsubscribe(channel.into()),
        Command::Publish { channel, data, id } => Cmd::Publish {
            channel: channel.into(),
            payload: Bytes::copy_from_slice(data.as_bytes()),
            id: id.map(Into::into),
        },
        Command::Presence { user } => Cmd::Presence(user.into()),
        Command::Auth { token } => Cmd::Auth(token.into()),
        Command::History {
            channel,
            limit,
            since,
            id,
        } => Cmd::History {
            channel: channel.into(),
            limit,
            since,
            id: id.map(Into::into),
        },
    }
}
