//! Channel names: 1 to `max_len` bytes of UTF-8 without control characters.

/// Why a channel name was refused.
pub fn validate(name: &str, max_len: usize) -> Result<(), &'static str> {
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
    use super::validate;

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
}
