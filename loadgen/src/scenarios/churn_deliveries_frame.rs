//! Server frames of `churn-deliveries`, parsed with a JSON parser: this mode counts only
//! what a client actually received and parsed, never raw bytes. Deliveries carrying a
//! loadgen payload (publisher, sequence number, the history offset if any), `subscribed`
//! (with its offset), `gap`, `error`, and everything else. Pure: bytes in, a `Frame` out.

use serde_json::Value;

/// A server text frame, parsed with a JSON parser (this mode counts only what parsed).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// A delivery whose `data` is a loadgen payload (`p`, `s`).
    Delivery {
        channel: String,
        p: u64,
        s: u64,
        offset: Option<String>,
    },
    /// A delivery whose data is not a loadgen payload.
    Foreign,
    Subscribed {
        channel: String,
        offset: Option<String>,
    },
    Gap {
        channel: String,
    },
    Error {
        code: String,
    },
    Other,
    Unparsed,
}

/// Parse one text frame.
pub(super) fn parse(text: &[u8]) -> Frame {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(text) else {
        return Frame::Unparsed;
    };
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    match o.get("type") {
        None => {
            let (Some(channel), Some(data)) = (s("channel"), o.get("data")) else {
                return Frame::Unparsed;
            };
            match (data["p"].as_u64(), data["s"].as_u64()) {
                (Some(p), Some(seq)) => Frame::Delivery {
                    channel,
                    p,
                    s: seq,
                    offset: s("offset"),
                },
                _ => Frame::Foreign,
            }
        }
        Some(Value::String(t)) => match t.as_str() {
            "subscribed" => match s("channel") {
                Some(channel) => Frame::Subscribed {
                    channel,
                    offset: s("offset"),
                },
                None => Frame::Unparsed,
            },
            "gap" => Frame::Gap {
                channel: s("channel").unwrap_or_default(),
            },
            "error" => Frame::Error {
                code: s("code").unwrap_or_default(),
            },
            _ => Frame::Other,
        },
        Some(_) => Frame::Unparsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            parse(br#"{"channel":"lg.1","data":{"p":0,"s":7,"t":1,"x":"a"},"offset":"5-0:1"}"#),
            Frame::Delivery {
                channel: "lg.1".into(),
                p: 0,
                s: 7,
                offset: Some("5-0:1".into())
            }
        );
        assert_eq!(
            parse(br#"{ "data": {"s":2,"p":1}, "channel": "lg.0" }"#),
            Frame::Delivery {
                channel: "lg.0".into(),
                p: 1,
                s: 2,
                offset: None
            }
        );
        assert_eq!(
            parse(br#"{"type":"subscribed","channel":"lg.0","offset":"0-0:0"}"#),
            Frame::Subscribed {
                channel: "lg.0".into(),
                offset: Some("0-0:0".into())
            }
        );
        assert_eq!(
            parse(br#"{"type":"gap","channel":"lg.0"}"#),
            Frame::Gap {
                channel: "lg.0".into()
            }
        );
        assert_eq!(
            parse(br#"{"channel":"lg.0","data":"text"}"#),
            Frame::Foreign
        );
        assert_eq!(
            parse(br#"{"channel":"lg.0","data":{"p":1,"#),
            Frame::Unparsed
        );
        assert_eq!(parse(br#"{"type":"presence"}"#), Frame::Other);
    }
}
