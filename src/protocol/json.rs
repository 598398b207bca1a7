//! The little JSON the hot path writes by hand: string escaping. Everything else goes
//! through serde_json.

/// Appends `s` to `out` as a JSON string literal (with the quotes).
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `s` as a JSON string literal.
pub fn string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_string(&mut out, s);
    out
}

/// True when `bytes` is one complete JSON value (surrounding whitespace allowed).
pub fn is_valid(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_match_serde_json() {
        for s in ["plain", "q\"b\\s", "nl\n\r\t", "\u{1}\u{1f}", "ünï€😀", ""] {
            let ours = String::from_utf8(string(s)).unwrap();
            assert_eq!(ours, serde_json::to_string(s).unwrap());
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn validity() {
        assert!(is_valid(br#" {"a":[1,2,{"b":null}]} "#));
        assert!(is_valid(b"42"));
        assert!(!is_valid(b"hello"));
        assert!(!is_valid(b""));
        assert!(!is_valid(b"{} {}"));
        assert!(!is_valid(&[0xff, 0xfe]));
    }
}
