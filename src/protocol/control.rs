//! The nodes' control channel (`channel::CONTROL_CHANNEL`, under the reserved `__fanout:` prefix):
//! commands every node of a cluster carries out, published through Redis (or the
//! embedded bus) by the node that took the API call. Today one command:
//! `{"disconnect":U}`, close every connection of user U with 4004. Pure encoding and
//! decoding; a payload that is not a valid command is ignored, never trusted further.

use bytes::Bytes;
use serde::Deserialize;

/// Close code of a connection closed by `POST /api/users/{U}/disconnect`.
pub const DISCONNECT_CODE: u16 = 4004;
/// Its close reason.
pub const DISCONNECT_REASON: &str = "disconnected by server";

/// Longest user id a control command may name (like `api::valid_user`).
pub const MAX_USER: usize = 256;

/// A decoded control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close every connection of this user with `DISCONNECT_CODE`.
    Disconnect(Box<str>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    disconnect: String,
}

/// The payload published on `CONTROL_CHANNEL` to disconnect `user`.
pub fn disconnect(user: &str) -> Bytes {
    let json = serde_json::json!({ "disconnect": user });
    Bytes::from(json.to_string())
}

/// Decodes a payload of `CONTROL_CHANNEL`; `None` for anything else (an unknown or
/// malformed command, a user id that is empty, too long or has control characters).
pub fn decode(payload: &[u8]) -> Option<Control> {
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    super::channel::validate_name(&wire.disconnect, MAX_USER).ok()?;
    Some(Control::Disconnect(wire.disconnect.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        for user in ["bob", "é \"quoted\" \\ x", "a:b"] {
            assert_eq!(
                decode(&disconnect(user)),
                Some(Control::Disconnect(user.into()))
            );
        }
        for bad in [
            &b""[..],
            b"nope",
            b"{}",
            br#"{"disconnect":""}"#,
            br#"{"disconnect":1}"#,
            br#"{"disconnect":"a\nb"}"#,
            br#"{"disconnect":"a","x":1}"#,
            br#"[{"disconnect":"a"}]"#,
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"disconnect":"{}"}}"#, "a".repeat(MAX_USER + 1));
        assert_eq!(decode(long.as_bytes()), None);
    }
}
