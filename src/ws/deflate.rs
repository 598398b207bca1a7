//! permessage-deflate (RFC 7692) without context takeover: the negotiation answer to a
//! client's `Sec-WebSocket-Extensions` offers, the compression of outgoing frames
//! (each message on its own, so one compressed frame can be shared by every
//! connection that negotiated it) and the bounded inflation of incoming messages.
//!
//! Owns no per-connection state, by design: the server always answers
//! `server_no_context_takeover` and `client_no_context_takeover`, so one compressor and
//! one inflater per thread (a shard's thread serves all of its connections) are reset
//! for every message. Never does I/O, never inflates past the caller's limit.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

mod negotiate;

pub use negotiate::{negotiate, Agreed};

/// Messages with a payload shorter than this go out uncompressed (RFC 7692 §6 lets each
/// message choose): under ~128 bytes deflate saves a few bytes at best (its block
/// header and Huffman tables eat the gain on JSON this short) while costing a
/// compressor reset and a pass over the data, for every message.
pub const MIN_COMPRESS: usize = 128;

/// Compression level of outgoing messages (see `Deflater::new`).
const LEVEL: u32 = 7;

/// The empty stored block that ends a sync flush; RFC 7692 §7.2.1 strips it on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Messages this process compressed (every thread): tests prove it counts per message
/// per shard, not per subscriber.
static COMPRESSED: AtomicU64 = AtomicU64::new(0);

/// How many messages this process has compressed so far.
pub fn compressed_count() -> u64 {
    COMPRESSED.load(Ordering::Relaxed)
}

thread_local! {
    static DEFLATER: RefCell<Deflater> = RefCell::new(Deflater::new());
    static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new());
}

/// Keeps scratch buffers no larger than this between messages (a 16 MiB echo must not
/// pin 16 MiB per thread forever).
const KEEP_SCRATCH: usize = 256 * 1024;

/// A raw-deflate compressor reset per message, with its scratch output.
struct Deflater {
    c: Compress,
    out: Vec<u8>,
}

impl Deflater {
    fn new() -> Deflater {
        Deflater {
            // Level 7: the smallest output on the bench's JSON (311 B per 1,010 B vs 315
            // at 6 and 313 at 9, docs/architecture.md) for ~2.5 µs more per message,
            // paid once per message per shard, not per subscriber.
            c: Compress::new(Compression::new(LEVEL), false),
            out: Vec::new(),
        }
    }

    /// Compresses `input` as one message; the result (tail stripped) is `self.out`.
    fn compress(&mut self, input: &[u8]) -> bool {
        self.c.reset();
        self.out.clear();
        self.out.reserve(input.len() / 2 + 64);
        loop {
            let used = self.c.total_in() as usize;
            let Some(rest) = input.get(used..) else {
                return false;
            };
            if self
                .c
                .compress_vec(rest, &mut self.out, FlushCompress::Sync)
                .is_err()
            {
                return false;
            }
            if self.c.total_in() as usize == input.len() && self.out.len() < self.out.capacity() {
                break;
            }
            let grow = self.out.capacity().max(64);
            self.out.reserve(grow);
        }
        COMPRESSED.fetch_add(1, Ordering::Relaxed);
        if self.out.ends_with(&TAIL) {
            self.out.truncate(self.out.len() - TAIL.len());
        }
        true
    }

    fn trim(&mut self) {
        if self.out.capacity() > KEEP_SCRATCH {
            self.out = Vec::new();
        }
    }
}

/// The payload of server frame `frame` (built by `ws::frame`: unmasked, final), with
/// its opcode; `None` for anything else.
fn split_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b0 & 0xf0 != 0x80 || b1 & 0x80 != 0 {
        return None; // not final, RSV set, or masked: not ours to touch
    }
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (l, r) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, r)
        }
        127 => {
            let (l, r) = rest.split_at_checked(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(l);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, r)
        }
        n => (n as usize, rest),
    };
    (rest.len() == len).then_some((b0 & 0x0f, rest))
}

/// What `compress_frames` made of a turn's frames.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// The frames joined, those worth it compressed.
    pub frame: Bytes,
    /// The longest payload that went out compressed (0: none): a peer's
    /// `server_max_window_bits` must cover it.
    pub longest: usize,
    /// How many messages went out compressed.
    pub messages: usize,
}

/// The frames of `frames` (each a whole server frame), data frames of at least
/// `MIN_COMPRESS` bytes compressed (RSV1 set) when that makes them smaller, the rest as
/// they are, joined into one buffer.
pub fn compress_frames(frames: &[Bytes]) -> Compressed {
    DEFLATER.with(|cell| {
        let mut d = cell.borrow_mut();
        let total: usize = frames.iter().map(Bytes::len).sum();
        let mut joined = BytesMut::with_capacity(total);
        let (mut longest, mut messages) = (0, 0);
        for f in frames {
            match split_frame(f) {
                Some((op @ (1 | 2), payload))
                    if payload.len() >= MIN_COMPRESS
                        && d.compress(payload)
                        && d.out.len() < payload.len() =>
                {
                    let op = if op == 1 {
                        super::frame::OutOp::Text
                    } else {
                        super::frame::OutOp::Binary
                    };
                    let at = joined.len();
                    super::frame::put_header(&mut joined, op, d.out.len());
                    joined[at] |= 0x40; // RSV1: this message is compressed
                    joined.put_slice(&d.out);
                    longest = longest.max(payload.len());
                    messages += 1;
                }
                _ => joined.put_slice(f),
            }
        }
        d.trim();
        Compressed {
            frame: joined.freeze(),
            longest,
            messages,
        }
    })
}

/// The frame to send a peer that negotiated deflate with window `bits` instead of the
/// plain `frame` (a pong stays plain; a message longer than the window allows too).
pub fn compress_for(frame: &Bytes, bits: u8) -> Bytes {
    match split_frame(frame) {
        Some((1 | 2, payload)) if payload.len() <= window(bits) => {
            compress_frames(std::slice::from_ref(frame)).frame
        }
        _ => frame.clone(),
    }
}

/// Longest message a peer with `server_max_window_bits` = `bits` can be sent
/// compressed. 15 bits is the compressor's own window: any length. Below it: with no
/// context takeover a match reaches back at most the message's own length, so a
/// message no longer than the window never exceeds it.
pub fn window(bits: u8) -> usize {
    if bits >= 15 {
        usize::MAX
    } else {
        1usize << bits.max(8)
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum InflateError {
    /// It inflates past the limit (a zip bomb, or just too large).
    TooLarge,
    /// Not a valid raw deflate stream.
    Corrupt,
}

/// A raw-deflate decompressor reset per message, with its scratch output.
struct Inflater {
    d: Decompress,
    out: Vec<u8>,
}

impl Inflater {
    fn new() -> Inflater {
        Inflater {
            d: Decompress::new(false),
            out: Vec::new(),
        }
    }

    /// Inflates `input` + the stripped tail into `self.out`, never past `max` bytes.
    fn inflate(&mut self, input: &[u8], max: usize) -> Result<(), InflateError> {
        self.d.reset(false);
        self.out.clear();
        for part in [input, &TAIL[..]] {
            let start = self.d.total_in();
            loop {
                let used = (self.d.total_in() - start) as usize;
                let rest = &part[used.min(part.len())..];
                if self.out.len() == self.out.capacity() {
                    if self.out.len() > max {
                        return Err(InflateError::TooLarge);
                    }
                    // Grow geometrically, never past one byte over the limit.
                    let room = (max + 1 - self.out.len()).min(self.out.capacity().max(4096));
                    self.out.reserve_exact(room);
                }
                let before = (self.d.total_in(), self.out.len());
                let status = self
                    .d
                    .decompress_vec(rest, &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                if self.out.len() > max {
                    return Err(InflateError::TooLarge);
                }
                let progressed = before != (self.d.total_in(), self.out.len());
                let consumed = (self.d.total_in() - start) as usize == part.len();
                if status == Status::StreamEnd {
                    // A final block (BFINAL) may come before the tail: nothing follows.
                    return Ok(());
                }
                if consumed && self.out.len() < self.out.capacity() {
                    break;
                }
                if !progressed && self.out.len() < self.out.capacity() {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(())
    }
}

/// Inflates compressed message `input` (the tail stripped by the sender) to at most
/// `max` bytes and hands the result to `then`.
pub fn inflate<R>(
    input: &[u8],
    max: usize,
    then: impl FnOnce(&[u8]) -> R,
) -> Result<R, InflateError> {
    INFLATER.with(|cell| {
        let mut inf = cell.borrow_mut();
        let result = inf.inflate(input, max).map(|()| then(&inf.out));
        if inf.out.capacity() > KEEP_SCRATCH {
            inf.out = Vec::new();
        }
        result
    })
}

#[cfg(test)]
mod tests;
