//! A connection's outbound queue: shared frames (`Bytes`, never copied) waiting to be
//! written, the byte count the slow-consumer limit is checked against, and the vectored
//! write that sends as many of them as the socket takes in one syscall.
//!
//! Two rules keep the byte stream a client parses intact whatever is trimmed: a frame
//! partly written is never dropped (the rest of its bytes must follow), and only
//! deliveries may be dropped (replies, control frames and HTTP responses never are).
//! The queue never decides a policy; the shard's output module does.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Most frames handed to one `writev` (Linux allows 1024).
const MAX_IOV: usize = 64;

/// How a flush ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    Empty,
    /// The socket is full; wait for it to become writable.
    Blocked,
}

/// What a queued frame is, for trimming: deliveries may be dropped, nothing else may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel delivery (droppable by the drop-oldest policy).
    Delivery,
    /// A reply, a control frame or an HTTP response: never dropped.
    Keep,
}

#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<(Bytes, Kind)>,
    /// Bytes queued and not yet written.
    bytes: usize,
    /// Bytes of the front frame already written (a frame is at most a few MiB).
    offset: u32,
    /// Something was queued since the last `release_if_empty`: the connection is in use,
    /// so its queue's memory is kept (freed after a whole quiet second instead).
    used: bool,
}

impl OutQueue {
    /// Queues a frame that must be written whole and never dropped.
    pub fn push(&mut self, frame: Bytes) {
        self.push_kind(frame, Kind::Keep);
    }

    pub fn push_kind(&mut self, frame: Bytes, kind: Kind) {
        self.bytes += frame.len();
        self.used = true;
        self.frames.push_back((frame, kind));
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Gives the queue's memory back when it is empty and nothing was queued since the
    /// last call (called once a second: idle connections own nothing, and a connection
    /// that gets a message every second or so keeps its queue instead of allocating
    /// and freeing it per message).
    pub fn release_if_empty(&mut self) -> bool {
        let release = self.frames.is_empty() && self.frames.capacity() > 0 && !self.used;
        if release {
            self.frames = VecDeque::new();
        }
        self.used = false;
        release
    }

    /// Drops everything queued except a partly written front frame, whose remaining
    /// bytes must still go out so the peer can parse what follows (a close frame).
    pub fn clear_unstarted(&mut self) {
        let keep = usize::from(self.offset > 0);
        while self.frames.len() > keep {
            if let Some((frame, _)) = self.frames.pop_back() {
                self.bytes -= frame.len();
            }
        }
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
            self.offset = 0;
        }
    }

    /// Drops the oldest deliveries (never a partly written frame, never the newest
    /// delivery, never anything else) until at most `limit` bytes remain or no delivery
    /// is left to drop. Returns how many frames were dropped.
    pub fn drop_oldest(&mut self, limit: usize) -> usize {
        let mut dropped = 0;
        let mut i = usize::from(self.offset > 0);
        let Some(mut newest) = self.frames.iter().rposition(|f| f.1 == Kind::Delivery) else {
            return 0;
        };
        while self.bytes > limit && i < newest {
            if self.frames[i].1 == Kind::Delivery {
                if let Some((frame, _)) = self.frames.remove(i) {
                    self.bytes -= frame.len();
                    dropped += 1;
                    newest -= 1;
                }
            } else {
                i += 1;
            }
        }
        dropped
    }

    /// Writes queued frames with vectored writes until the queue is empty or the socket
    /// would block. Returns the outcome and the bytes written.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        while !self.frames.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, (frame, _)) in self.frames.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.offset as usize } else { 0 };
                iov[i] = IoSlice::new(&frame[start..]);
                n = i + 1;
            }
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(sent) => {
                    written += sent;
                    self.advance(sent);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, written))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.frames.capacity() > 256 {
            self.frames = VecDeque::new();
        }
        Ok((Flushed::Empty, written))
    }

    fn advance(&mut self, mut sent: usize) {
        self.bytes -= sent;
        while sent > 0 {
            let Some((front, _)) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.offset as usize;
            if sent >= left {
                sent -= left;
                self.offset = 0;
                self.frames.pop_front();
            } else {
                self.offset += sent as u32;
                sent = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_in_use_keeps_its_memory_and_an_idle_one_gives_it_back() {
        let mut q = OutQueue::default();
        let mut sink = Vec::new();
        q.push_kind(Bytes::from_static(b"abc"), Kind::Delivery);
        assert!(matches!(q.write_to(&mut sink), Ok((Flushed::Empty, 3))));
        q.release_if_empty();
        assert!(q.frames.capacity() > 0, "used this second: kept");
        q.release_if_empty();
        assert_eq!(q.frames.capacity(), 0, "a quiet second: given back");
        assert_eq!(std::mem::size_of::<OutQueue>(), 48, "no bigger than before");
    }

    /// A writer that takes at most `cap` bytes per call, then blocks after `calls`.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.cap - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = OutQueue::default();
        for s in ["hello ", "shared ", "world"] {
            q.push(Bytes::from_static(s.as_bytes()));
        }
        let mut w = Trickle {
            out: vec![],
            cap: 4,
            calls: 2,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), (Flushed::Blocked, 8));
        assert_eq!(q.bytes(), 10);
        w.calls = 100;
        assert_eq!(q.write_to(&mut w).unwrap(), (Flushed::Empty, 10));
        assert_eq!(w.out, b"hello shared world");
        assert!(q.is_empty());
    }

    #[test]
    fn one_writev_takes_many_frames() {
        let mut q = OutQueue::default();
        for _ in 0..10 {
            q.push(Bytes::from_static(b"abc"));
        }
        let mut w = Trickle {
            out: vec![],
            cap: 1000,
            calls: 1,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), (Flushed::Empty, 30));
    }

    #[test]
    fn drop_oldest_keeps_a_partly_written_front() {
        let mut q = OutQueue::default();
        for _ in 0..5 {
            q.push_kind(Bytes::from(vec![1u8; 10]), Kind::Delivery);
        }
        let mut w = Trickle {
            out: vec![],
            cap: 3,
            calls: 1,
        };
        q.write_to(&mut w).unwrap();
        assert_eq!(q.drop_oldest(20), 3);
        assert_eq!(q.frames(), 2);
        assert_eq!(q.bytes(), 17);
        w.calls = 10;
        w.cap = 100;
        q.write_to(&mut w).unwrap();
        assert_eq!(w.out.len(), 20);
    }

    #[test]
    fn drop_oldest_never_drops_replies() {
        let mut q = OutQueue::default();
        q.push_kind(Bytes::from(vec![1u8; 10]), Kind::Delivery);
        q.push(Bytes::from(vec![2u8; 10]));
        q.push_kind(Bytes::from(vec![3u8; 10]), Kind::Delivery);
        q.push_kind(Bytes::from(vec![4u8; 10]), Kind::Delivery);
        assert_eq!(q.drop_oldest(0), 2, "the newest delivery stays");
        assert_eq!(q.frames(), 2);
        assert_eq!(q.bytes(), 20);
        let mut w = Trickle {
            out: vec![],
            cap: 100,
            calls: 10,
        };
        q.write_to(&mut w).unwrap();
        assert_eq!(w.out, [[2u8; 10], [4u8; 10]].concat());
    }

    #[test]
    fn clear_keeps_the_rest_of_a_partly_written_frame() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abcdef"));
        q.push(Bytes::from_static(b"ghij"));
        let mut w = Trickle {
            out: vec![],
            cap: 4,
            calls: 1,
        };
        q.write_to(&mut w).unwrap();
        q.clear_unstarted();
        assert_eq!(q.bytes(), 2);
        q.push(Bytes::from_static(b"XY"));
        w.calls = 10;
        q.write_to(&mut w).unwrap();
        assert_eq!(w.out, b"abcdefXY");
        // Nothing started: everything goes.
        q.push(Bytes::from_static(b"zz"));
        q.clear_unstarted();
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
