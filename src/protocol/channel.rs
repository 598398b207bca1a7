//! Channel names: 1 to `max_len` bytes of UTF-8 without control characters, outside the
//! nodes' own channels (the probe prefix and the control channel).

/// Prefix of each node's private pub/sub probe channel
/// (`__fanout:probe:<server-id>:<pid>`, see `broker/redis/reader.rs`). Clients and the
/// HTTP API may not subscribe, unsubscribe or publish under it: unsubscribing a node's
/// probe would break its health check and force a resubscribe (`gap`) for everyone.
pub const PROBE_PREFIX: &str = "__fanout:probe:";

/// The nodes' control channel (`protocol::control` encodes its commands): every node
/// subscribes to it for its lifetime. Clients and the HTTP API may not subscribe,
/// unsubscribe or publish to it (`validate`).
pub const CONTROL_CHANNEL: &str = "__fanout:control";

/// Whether `name` is one of the nodes' own channels (probe, control): never kept in
/// history, never offered to clients.
pub fn is_internal(name: &str) -> bool {
    name.starts_with(PROBE_PREFIX) || name == CONTROL_CHANNEL
}

/// Why a channel name was refused.
pub fn validate(name: &str, max_len: usize) -> Result<(), &'static str> {
    validate_name(name, max_len)?;
    if name.starts_with(PROBE_PREFIX) {
        return Err("channel name is reserved (__fanout:probe: prefix)");
    }
    if name == CONTROL_CHANNEL {
        return Err("channel name is reserved (the nodes' control channel)");
    }
    Ok(())
}

/// The shape rules alone (length, no control characters), shared with user ids, which
/// name no channel and so have no reserved prefix.
pub fn validate_name(name: &str, max_len: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("channel name is empty");
    }
    if name.len() > max_len {
        return Err("channel name is too long");
    }
    if name.chars().any(char::is_control) {
        return Err("channel name contains control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{validate, validate_name, PROBE_PREFIX};

    #[test]
    fn names() {
        assert!(validate("news", 256).is_ok());
        assert!(validate("ünï.€/😀:*", 256).is_ok());
        assert!(validate(&"a".repeat(256), 256).is_ok());
        assert!(validate(&"a".repeat(257), 256).is_err());
        assert!(validate("", 256).is_err());
        assert!(validate("a\nb", 256).is_err());
        assert!(validate("a\u{7f}", 256).is_err());
        assert!(validate("a\u{85}", 256).is_err());
    }

    #[test]
    fn the_probe_prefix_is_reserved() {
        assert!(validate("__fanout:probe:node-1:42", 256).is_err());
        assert!(validate(PROBE_PREFIX, 256).is_err());
        assert!(validate("__fanout:probe", 256).is_ok());
        assert!(validate("x__fanout:probe:", 256).is_ok());
        assert!(validate_name("__fanout:probe:node-1:42", 256).is_ok());
    }

    #[test]
    fn the_control_channel_is_reserved() {
        use super::CONTROL_CHANNEL;
        assert!(validate(CONTROL_CHANNEL, 256).is_err());
        assert!(validate("__fanout:control:x", 256).is_ok());
        assert!(validate("__fanout:contro", 256).is_ok());
    }
}
