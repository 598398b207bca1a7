//! Cheap byte scanner for server messages: classifies a text frame as a delivery (and
//! pulls publisher id, sequence and send time out of loadgen's own payload) or as a
//! control frame, without a JSON parser on the hot path.

/// A classified server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// A delivery carrying a loadgen payload: `t` is the intended send time, `a` the
    /// actual one (`a == t` when the payload has no `"a"`).
    Delivery {
        channel: &'a [u8],
        p: u64,
        s: u64,
        t: u64,
        a: u64,
    },
    /// A delivery whose data is not a loadgen payload.
    Foreign {
        channel: &'a [u8],
    },
    Subscribed {
        channel: &'a [u8],
    },
    Unsubscribed {
        channel: &'a [u8],
    },
    Published {
        id: Option<u64>,
    },
    Error {
        code: &'a [u8],
        id: Option<u64>,
    },
    Gap {
        channel: &'a [u8],
    },
    /// Any other `type`.
    Other,
    /// Not recognisable at all.
    Unparsed,
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() || needle.is_empty() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    let last = hay.len().checked_sub(needle.len())?;
    while i <= last {
        match hay[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Position just after `"key"` followed by optional whitespace and `:` and whitespace.
fn value_pos(b: &[u8], key: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = find_from(b, key, at)?;
        let j = skip_ws(b, i + key.len());
        if j < b.len() && b[j] == b':' {
            return Some(skip_ws(b, j + 1));
        }
        at = i + 1;
    }
}

/// The (escape-free) string value at `i` (which must point at `"`).
fn str_at(b: &[u8], i: usize) -> Option<&[u8]> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = &b[i + 1..];
    let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    if rest[end] == b'\\' {
        // Escaped strings are never loadgen channel names; return the raw prefix.
        let e2 = rest.iter().position(|&c| c == b'"')?;
        return Some(&rest[..e2]);
    }
    Some(&rest[..end])
}

fn num_at(b: &[u8], i: usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b.get(i..)? {
        if c.is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
            n += 1;
        } else {
            break;
        }
    }
    (n > 0).then_some(v)
}

fn id_of(b: &[u8]) -> Option<u64> {
    let i = value_pos(b, b"\"id\"", 0)?;
    // numeric id, or a string holding digits
    num_at(b, i).or_else(|| str_at(b, i).and_then(|s| num_at(s, 0)))
}

/// Fast path for the exact envelope fanout (and most servers) send:
/// `{"channel":"C","data":{"p":P,"s":S,"t":T,...`.
fn fast_delivery(b: &[u8]) -> Option<Msg<'_>> {
    const HEAD: &[u8] = br#"{"channel":""#;
    let rest = b.strip_prefix(HEAD)?;
    let q = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    if rest[q] != b'"' {
        return None;
    }
    let channel = &rest[..q];
    let mut i = HEAD.len() + q;
    let mut field = |tag: &[u8]| field_at(b, &mut i, tag);
    let p = field(br#"","data":{"p":"#)?;
    let s = field(br#","s":"#)?;
    let t = field(br#","t":"#)?;
    let a = field(br#","a":"#).unwrap_or(t);
    Some(Msg::Delivery {
        channel,
        p,
        s,
        t,
        a,
    })
}

/// `tag` then a decimal number at `*i`; moves `*i` past both.
fn field_at(b: &[u8], i: &mut usize, tag: &[u8]) -> Option<u64> {
    if b.get(*i..*i + tag.len())? != tag {
        return None;
    }
    *i += tag.len();
    let v = num_at(b, *i)?;
    while *i < b.len() && b[*i].is_ascii_digit() {
        *i += 1;
    }
    Some(v)
}

/// loadgen's own payload sent bare (no envelope, as Nchan delivers it):
/// `{"p":P,"s":S,"t":T[,"a":A]...` → (p, s, t, a).
pub fn scan_payload(b: &[u8]) -> Option<(u64, u64, u64, u64)> {
    let mut i = 0;
    let mut field = |tag: &[u8]| field_at(b, &mut i, tag);
    let p = field(br#"{"p":"#)?;
    let s = field(br#","s":"#)?;
    let t = field(br#","t":"#)?;
    let a = field(br#","a":"#).unwrap_or(t);
    Some((p, s, t, a))
}

/// Classify one server text message.
pub fn scan(b: &[u8]) -> Msg<'_> {
    if let Some(m) = fast_delivery(b) {
        return m;
    }
    let data = value_pos(b, b"\"data\"", 0);
    let ty = match data {
        // Only a "type" before "data" (or without data) is a top-level type.
        Some(d) => value_pos(&b[..d], b"\"type\"", 0),
        None => value_pos(b, b"\"type\"", 0),
    };
    let channel = || {
        value_pos(b, b"\"channel\"", 0)
            .and_then(|i| str_at(b, i))
            .unwrap_or(b"")
    };
    if let Some(t) = ty {
        let Some(name) = str_at(b, t) else {
            return Msg::Unparsed;
        };
        return match name {
            b"subscribed" => Msg::Subscribed { channel: channel() },
            b"unsubscribed" => Msg::Unsubscribed { channel: channel() },
            b"published" => Msg::Published { id: id_of(b) },
            b"error" => Msg::Error {
                code: value_pos(b, b"\"code\"", 0)
                    .and_then(|i| str_at(b, i))
                    .unwrap_or(b""),
                id: id_of(b),
            },
            b"gap" => Msg::Gap { channel: channel() },
            _ => Msg::Other,
        };
    }
    let Some(d) = data else {
        return Msg::Unparsed;
    };
    // Channel: usually before data; search only the envelope part.
    let ch = value_pos(&b[..d], b"\"channel\"", 0)
        .and_then(|i| str_at(b, i))
        .or_else(|| {
            // channel after data: search after the payload's end is ambiguous; accept
            // the last occurrence.
            let mut last = None;
            let mut at = d;
            while let Some(i) = value_pos(b, b"\"channel\"", at) {
                last = str_at(b, i);
                at = i;
            }
            last
        });
    let Some(channel) = ch else {
        return Msg::Unparsed;
    };
    let fields = (|| {
        let p = num_at(b, value_pos(b, b"\"p\"", d)?)?;
        let s = num_at(b, value_pos(b, b"\"s\"", d)?)?;
        let t = num_at(b, value_pos(b, b"\"t\"", d)?)?;
        let a = value_pos(b, b"\"a\"", d).and_then(|i| num_at(b, i));
        Some((p, s, t, a.unwrap_or(t)))
    })();
    match fields {
        Some((p, s, t, a)) => Msg::Delivery {
            channel,
            p,
            s,
            t,
            a,
        },
        None => Msg::Foreign { channel },
    }
}

/// Channel index of `name` if it is `prefix.N`.
pub fn channel_index(name: &[u8], prefix: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix(b".")?;
    if rest.is_empty() || rest.len() > 9 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    num_at(rest, 0).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_fast_and_spaced() {
        let m = br#"{"channel":"lg.7","data":{"p":3,"s":12345,"t":987654321,"x":"aaaa"}}"#;
        assert_eq!(
            scan(m),
            Msg::Delivery {
                channel: b"lg.7",
                p: 3,
                s: 12345,
                t: 987654321,
                a: 987654321
            }
        );
        let m = br#"{"channel":"lg.7","data":{"p":3,"s":1,"t":100,"a":250,"x":"a"}}"#;
        assert!(matches!(scan(m), Msg::Delivery { t: 100, a: 250, .. }));
        let m = br#"{ "data" : { "a": 9, "t": 5, "s" : 2, "p":1 }, "channel" : "lg.0" }"#;
        assert!(matches!(scan(m), Msg::Delivery { t: 5, a: 9, .. }));
        let m = br#"{ "data" : { "t": 5, "s" : 2, "p":1 }, "channel" : "lg.0" }"#;
        assert_eq!(
            scan(m),
            Msg::Delivery {
                channel: b"lg.0",
                p: 1,
                s: 2,
                t: 5,
                a: 5
            }
        );
    }

    #[test]
    fn foreign_and_type_inside_data() {
        let m = br#"{"channel":"news","data":{"type":"subscribed","hello":1}}"#;
        assert_eq!(scan(m), Msg::Foreign { channel: b"news" });
        let m = br#"{"channel":"news","data":"not json"}"#;
        assert_eq!(scan(m), Msg::Foreign { channel: b"news" });
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            scan(br#"{"type":"subscribed","channel":"lg.1"}"#),
            Msg::Subscribed { channel: b"lg.1" }
        );
        assert_eq!(
            scan(br#"{"channel":"lg.1","type":"unsubscribed"}"#),
            Msg::Unsubscribed { channel: b"lg.1" }
        );
        assert_eq!(
            scan(br#"{"type":"published","id":42}"#),
            Msg::Published { id: Some(42) }
        );
        assert_eq!(
            scan(br#"{"type":"published","id":"42"}"#),
            Msg::Published { id: Some(42) }
        );
        assert_eq!(
            scan(br#"{"type":"error","code":"rate_limited","message":"slow down","id":7}"#),
            Msg::Error {
                code: b"rate_limited",
                id: Some(7)
            }
        );
        assert_eq!(
            scan(br#"{"type":"gap","channel":"lg.2"}"#),
            Msg::Gap { channel: b"lg.2" }
        );
        assert_eq!(scan(br#"{"type":"presence","online":true}"#), Msg::Other);
        assert_eq!(scan(b"garbage"), Msg::Unparsed);
        assert_eq!(scan(b""), Msg::Unparsed);
        assert_eq!(scan(br#"{"type":5}"#), Msg::Unparsed);
    }

    #[test]
    fn truncated_numbers_do_not_panic() {
        assert_eq!(
            scan(br#"{"channel":"lg.0","data":{"p":"#),
            Msg::Foreign { channel: b"lg.0" }
        );
        assert_eq!(
            scan(br#"{"channel":"lg.0","data":{"p":99999999999999999999999,"s":1,"t":1}}"#),
            Msg::Foreign { channel: b"lg.0" }
        );
        assert_eq!(scan(br#"{"channel":"#), Msg::Unparsed);
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_index(b"lg.12", b"lg"), Some(12));
        assert_eq!(channel_index(b"lg.", b"lg"), None);
        assert_eq!(channel_index(b"lgx.1", b"lg"), None);
        assert_eq!(channel_index(b"lg.1a", b"lg"), None);
        assert_eq!(channel_index(b"other", b"lg"), None);
    }
}
