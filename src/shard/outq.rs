//! A connection's outbound queue: shared frames (`Bytes`, never copied) waiting to be
//! written, the byte count the slow-consumer limit is checked against, and the vectored
//! write that sends as many of them as the socket takes in one syscall.

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

#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    offset: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

impl OutQueue {
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
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

    /// Gives the queue's memory back when it is empty (idle connections own nothing;
    /// called once a second, so a busy connection re-allocates at most that often).
    pub fn release_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    /// Drops everything queued (the connection is being closed).
    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
        self.offset = 0;
        self.bytes = 0;
    }

    /// Drops whole frames from the front (never one partly written) until at most
    /// `limit` bytes remain. Returns how many frames were dropped.
    pub fn drop_oldest(&mut self, limit: usize) -> usize {
        let keep_front = usize::from(self.offset > 0);
        let mut dropped = 0;
        while self.bytes > limit && self.frames.len() > keep_front {
            let Some(frame) = self.frames.remove(keep_front) else {
                break;
            };
            self.bytes -= frame.len();
            dropped += 1;
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
            for (i, frame) in self.frames.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.offset } else { 0 };
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
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if sent >= left {
                sent -= left;
                self.offset = 0;
                self.frames.pop_front();
            } else {
                self.offset += sent;
                sent = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            q.push(Bytes::from(vec![1u8; 10]));
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
}
