//! Incoming WebSocket frames: decodes client frames in place from a caller-owned buffer,
//! reassembles fragmented messages, validates UTF-8 and enforces the message size limit.
//! Holds only the state that must survive between reads (a fragmented message, bytes of
//! an oversized frame still to skip); never allocates for an unfragmented message.
//! With permessage-deflate negotiated, a message with RSV1 is inflated (bounded by the
//! message limit, `ws::deflate`) before it is handed on.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A complete message or control frame, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The peer's close frame: status code and reason, if it sent them.
    Close(Option<(u16, &'a str)>),
    /// A message over the size limit was skipped (without buffering it).
    TooLarge,
}

/// What the handler wants after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A protocol violation: the connection must be closed with this code.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Fail {
    pub code: u16,
    pub reason: &'static str,
}

/// A frame longer than this many times the message limit is not skipped but refused
/// with close 1009: no well-behaved client sends it, and skipping it costs bandwidth.
pub const HARD_LIMIT_FACTOR: u64 = 16;

const fn fail(code: u16, reason: &'static str) -> Fail {
    Fail { code, reason }
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// Prefix of `data` known to be valid UTF-8 (text messages fail fast).
    valid_up_to: usize,
    /// The message passed the size limit: its remaining fragments are skipped.
    oversized: bool,
    /// RSV1 was set on its first frame: `data` is deflated (UTF-8 is checked after
    /// inflating it).
    compressed: bool,
}

/// Per-connection decoder state. Small on purpose: an idle connection holds 16 bytes.
#[derive(Debug, Default)]
pub struct Inbound {
    partial: Option<Box<Partial>>,
    /// Payload bytes of an oversized frame still to be skipped.
    skip: u64,
}

impl Inbound {
    /// True when no message is half received (used for memory accounting and tests).
    pub fn is_idle(&self) -> bool {
        self.partial.is_none() && self.skip == 0
    }

    /// Decodes every complete frame at the start of `buf` (unmasking it in place) and
    /// hands each message to `handler`. Returns how many bytes were consumed; the rest is
    /// an incomplete frame the caller must keep and present again with more bytes.
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        handler: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Result<usize, Fail> {
        self.feed_ext(buf, max_message, false, handler)
    }

    /// `feed` on a connection that negotiated permessage-deflate (`deflate`): a data
    /// message whose first frame has RSV1 is inflated to at most `max_message` bytes
    /// (past it: close 1009); RSV1 anywhere else is a protocol error.
    pub fn feed_ext(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        deflate: bool,
        handler: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Result<usize, Fail> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = (self.skip.min((buf.len() - pos) as u64)) as usize;
                self.skip -= n as u64;
                pos += n;
                if self.skip > 0 {
                    return Ok(pos);
                }
                continue;
            }
            let mut cursor = Cursor::new(&buf[pos..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(pos),
                Err(_) => return Err(fail(1002, "invalid opcode")),
            };
            let header_len = cursor.position() as usize;
            if header.rsv2 || header.rsv3 {
                return Err(fail(1002, "reserved bits set"));
            }
            let compressed = header.rsv1;
            if compressed
                && (!deflate || !matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary)))
            {
                // RFC 7692 §6.1: only the first frame of a data message may carry it.
                return Err(fail(1002, "reserved bits set"));
            }
            let Some(mask) = header.mask else {
                return Err(fail(1002, "client frames must be masked"));
            };
            let is_control = matches!(header.opcode, OpCode::Control(_));
            if is_control && (len > 125 || !header.is_final) {
                return Err(fail(1002, "bad control frame"));
            }
            if !is_control && len > (max_message as u64).saturating_mul(HARD_LIMIT_FACTOR) {
                return Err(fail(1009, "message too big"));
            }
            if !is_control && len > max_message as u64 {
                // Oversized: skip its payload as it streams in, never buffer it.
                let started = match header.opcode {
                    OpCode::Data(Data::Continue) => match self.partial.as_deref_mut() {
                        Some(p) => p.oversized,
                        None => return Err(fail(1002, "continuation without a message")),
                    },
                    _ if self.partial.is_some() => {
                        return Err(fail(1002, "new message inside a fragmented one"))
                    }
                    _ => false,
                };
                pos += header_len;
                self.skip = len;
                if self.mark_oversized(header.is_final, started, handler) == Flow::Stop {
                    return Ok(pos); // the rest is skipped on the next call
                }
                continue;
            }
            let total = header_len + len as usize;
            if buf.len() - pos < total {
                return Ok(pos);
            }
            let payload = &mut buf[pos + header_len..pos + total];
            unmask(payload, mask);
            pos += total;
            let flow = match header.opcode {
                OpCode::Control(Control::Ping) => handler(Message::Ping(payload)),
                OpCode::Control(Control::Pong) => handler(Message::Pong),
                OpCode::Control(Control::Close) => {
                    let close = parse_close(payload)?;
                    handler(Message::Close(close));
                    return Ok(pos);
                }
                OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                    if self.partial.is_some() {
                        return Err(fail(1002, "new message inside a fragmented one"));
                    }
                    let text = header.opcode == OpCode::Data(Data::Text);
                    if header.is_final && compressed {
                        deliver_inflated(text, payload, max_message, handler)?
                    } else if header.is_final {
                        deliver(text, payload, handler)?
                    } else {
                        let mut p = Box::new(Partial {
                            text,
                            data: Vec::new(),
                            valid_up_to: 0,
                            oversized: false,
                            compressed,
                        });
                        append(&mut p, payload)?;
                        self.partial = Some(p);
                        Flow::Continue
                    }
                }
                OpCode::Data(Data::Continue) => {
                    let Some(p) = self.partial.as_deref_mut() else {
                        return Err(fail(1002, "continuation without a message"));
                    };
                    if !p.oversized {
                        if p.data.len() + payload.len() > max_message {
                            p.oversized = true;
                            p.data = Vec::new();
                        } else {
                            append(p, payload)?;
                        }
                    }
                    if header.is_final {
                        let done = self.partial.take();
                        match done {
                            Some(p) if p.oversized => handler(Message::TooLarge),
                            Some(p) if p.compressed => {
                                deliver_inflated(p.text, &p.data, max_message, handler)?
                            }
                            Some(p) => deliver(p.text, &p.data, handler)?,
                            None => Flow::Continue,
                        }
                    } else {
                        Flow::Continue
                    }
                }
                // Reserved opcodes are rejected by FrameHeader::parse.
                _ => return Err(fail(1002, "invalid opcode")),
            };
            if flow == Flow::Stop {
                return Ok(pos);
            }
        }
    }

    fn mark_oversized(
        &mut self,
        is_final: bool,
        started: bool,
        handler: &mut dyn FnMut(Message<'_>) -> Flow,
    ) -> Flow {
        if is_final {
            self.partial = None;
            return handler(Message::TooLarge);
        } else if !started {
            self.partial = Some(Box::new(Partial {
                text: false,
                data: Vec::new(),
                valid_up_to: 0,
                oversized: true,
                compressed: false,
            }));
        } else if let Some(p) = self.partial.as_deref_mut() {
            p.oversized = true;
            p.data = Vec::new();
        }
        Flow::Continue
    }
}

fn deliver(
    text: bool,
    payload: &[u8],
    handler: &mut dyn FnMut(Message<'_>) -> Flow,
) -> Result<Flow, Fail> {
    if text {
        match std::str::from_utf8(payload) {
            Ok(s) => Ok(handler(Message::Text(s))),
            Err(_) => Err(fail(1007, "invalid UTF-8")),
        }
    } else {
        Ok(handler(Message::Binary(payload)))
    }
}

/// Inflates a compressed message (at most `max` bytes: a zip bomb is refused with
/// 1009 as soon as its output passes the limit) and delivers it.
fn deliver_inflated(
    text: bool,
    deflated: &[u8],
    max: usize,
    handler: &mut dyn FnMut(Message<'_>) -> Flow,
) -> Result<Flow, Fail> {
    match crate::ws::deflate::inflate(deflated, max, |data| deliver(text, data, handler)) {
        Ok(flow) => flow,
        Err(crate::ws::deflate::InflateError::TooLarge) => Err(fail(1009, "message too big")),
        Err(crate::ws::deflate::InflateError::Corrupt) => {
            Err(fail(1007, "invalid compressed data"))
        }
    }
}

/// Appends a fragment, checking UTF-8 as far as it is complete (fail fast).
fn append(p: &mut Partial, payload: &[u8]) -> Result<(), Fail> {
    p.data.extend_from_slice(payload);
    if p.text && !p.compressed {
        match std::str::from_utf8(&p.data[p.valid_up_to..]) {
            Ok(_) => p.valid_up_to = p.data.len(),
            Err(e) if e.error_len().is_none() => p.valid_up_to += e.valid_up_to(),
            Err(_) => return Err(fail(1007, "invalid UTF-8")),
        }
    }
    Ok(())
}

fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Fail> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(fail(1002, "close frame of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                return Err(fail(1002, "invalid close code"));
            }
            match std::str::from_utf8(&payload[2..]) {
                Ok(reason) => Ok(Some((code, reason))),
                Err(_) => Err(fail(1007, "invalid UTF-8 in close reason")),
            }
        }
    }
}

/// XORs `data` with the 4-byte masking key, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Builds a masked client frame (used by tests, benches and fuzz seeds).
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(opcode | if fin { 0x80 } else { 0 });
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests;
