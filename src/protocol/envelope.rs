//! The delivery envelope `{"channel":C,"data":D}` (and `,"offset":O` on history
//! channels), built together with its WebSocket header into one exactly-sized buffer,
//! once per message, shared by every subscriber. D is the publisher's bytes when they
//! are JSON, else a JSON string of them.

use bytes::{BufMut, Bytes, BytesMut};

use super::json;
use crate::offset::Offset;
use crate::ws::frame::{self, OutOp};

const PREFIX: &[u8] = b"{\"channel\":";
const MIDDLE: &[u8] = b",\"data\":";
const OFFSET: &[u8] = b",\"offset\":\"";

/// Builds delivery frames, reusing its scratch space between messages.
#[derive(Default)]
pub struct EnvelopeBuilder {
    channel: Vec<u8>,
    data: Vec<u8>,
    offset: Vec<u8>,
}

impl EnvelopeBuilder {
    /// One complete text frame delivering `payload` on `channel`. `payload_is_json` says
    /// whether the payload may be used verbatim; otherwise it becomes a JSON string.
    pub fn build(&mut self, channel: &str, payload: &[u8], payload_is_json: bool) -> Bytes {
        self.build_at(channel, payload, payload_is_json, None)
    }

    /// `build`, with the message's history offset when it has one.
    pub fn build_at(
        &mut self,
        channel: &str,
        payload: &[u8],
        payload_is_json: bool,
        offset: Option<&Offset>,
    ) -> Bytes {
        self.offset.clear();
        if let Some(offset) = offset {
            self.offset.extend_from_slice(OFFSET);
            offset.write_to(&mut self.offset);
            self.offset.push(b'"');
        }
        self.channel.clear();
        json::push_string(&mut self.channel, channel);
        let data: &[u8] = if payload_is_json {
            payload
        } else {
            self.data.clear();
            json::push_string(&mut self.data, &String::from_utf8_lossy(payload));
            &self.data
        };
        let body_len =
            PREFIX.len() + self.channel.len() + MIDDLE.len() + data.len() + self.offset.len() + 1;
        let mut out = BytesMut::with_capacity(frame::header_len(body_len) + body_len);
        frame::put_header(&mut out, OutOp::Text, body_len);
        out.put_slice(PREFIX);
        out.put_slice(&self.channel);
        out.put_slice(MIDDLE);
        out.put_slice(data);
        out.put_slice(&self.offset);
        out.put_u8(b'}');
        out.freeze()
    }

    /// A delivery of a payload from any source: verbatim if it is JSON.
    pub fn build_checked(&mut self, channel: &str, payload: &[u8]) -> Bytes {
        self.build_checked_at(channel, payload, None)
    }

    /// `build_checked`, with the message's history offset when it has one.
    pub fn build_checked_at(
        &mut self,
        channel: &str,
        payload: &[u8],
        offset: Option<&Offset>,
    ) -> Bytes {
        let is_json = json::is_valid(payload);
        self.build_at(channel, payload, is_json, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_is_kept_byte_for_byte() {
        let mut b = EnvelopeBuilder::default();
        let f = b.build_checked("news", br#"{"a": 1.50,  "b":[ ]}"#);
        assert_eq!(
            &f[2..],
            br#"{"channel":"news","data":{"a": 1.50,  "b":[ ]}}"#
        );
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1] as usize, f.len() - 2);
    }

    #[test]
    fn offset_goes_last() {
        let mut b = EnvelopeBuilder::default();
        let o = Offset::parse("12-3:45").unwrap();
        let f = b.build_checked_at("news", b"[1]", Some(&o));
        assert_eq!(
            &f[2..],
            br#"{"channel":"news","data":[1],"offset":"12-3:45"}"#
        );
        assert_eq!(f[1] as usize, f.len() - 2);
        // The scratch offset does not leak into the next message.
        let f = b.build_checked("news", b"[1]");
        assert_eq!(&f[2..], br#"{"channel":"news","data":[1]}"#);
    }

    #[test]
    fn non_json_payload_becomes_a_string() {
        let mut b = EnvelopeBuilder::default();
        let f = b.build_checked("q\"", b"hello \"world\"\n");
        let v: serde_json::Value = serde_json::from_slice(&f[2..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel":"q\"","data":"hello \"world\"\n"})
        );
        let f = b.build_checked("c", &[0xff, b'a']);
        let v: serde_json::Value = serde_json::from_slice(&f[2..]).unwrap();
        assert_eq!(v["data"], "\u{fffd}a");
    }

    #[test]
    fn long_payload_gets_extended_length() {
        let mut b = EnvelopeBuilder::default();
        let payload = format!("\"{}\"", "x".repeat(70_000));
        let f = b.build_checked("c", payload.as_bytes());
        assert_eq!(f[1], 127);
        let len = u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 10);
    }
}
