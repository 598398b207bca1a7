//! History offsets: a position in one channel's history stream. An offset is a Redis
//! Stream id (`ms-seq`) plus the stream's epoch (a number chosen when the stream was
//! created; a stream lost and created again gets a new one), written for clients as
//! `"<ms>-<seq>:<epoch>"`. Clients treat it as opaque. Plain data: parsing, formatting,
//! ordering within an epoch; no I/O, no decisions.

use std::cmp::Ordering;
use std::fmt;

/// A Redis Stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// The id before every entry (`0-0`): "nothing seen yet".
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq` (decimal, no sign, no spaces).
    pub fn parse(s: &[u8]) -> Option<StreamId> {
        let dash = s.iter().position(|&b| b == b'-')?;
        Some(StreamId {
            ms: digits(&s[..dash])?,
            seq: digits(&s[dash + 1..])?,
        })
    }

    /// The next id a stream could hold after this one.
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A position in a channel's history: an entry id within an epoch. Epoch 0 means the
/// channel had no history stream yet when the offset was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offset {
    pub id: StreamId,
    pub epoch: u64,
}

/// Longest offset string accepted from a client (`u64-u64:u64` is at most 62 bytes).
pub const MAX_LEN: usize = 64;

impl Offset {
    /// Parses `"<ms>-<seq>:<epoch>"`.
    pub fn parse(s: &str) -> Option<Offset> {
        let s = s.as_bytes();
        if s.len() > MAX_LEN {
            return None;
        }
        let colon = s.iter().position(|&b| b == b':')?;
        Some(Offset {
            id: StreamId::parse(&s[..colon])?,
            epoch: digits(&s[colon + 1..])?,
        })
    }

    /// Orders two offsets of the same epoch; `None` across epochs (no order exists).
    pub fn cmp_within(&self, other: &Offset) -> Option<Ordering> {
        (self.epoch == other.epoch).then(|| self.id.cmp(&other.id))
    }

    /// This offset is at or before `other` in the same epoch: a message at `self` was
    /// already covered by a reader that reached `other`.
    pub fn covered_by(&self, other: &Offset) -> bool {
        matches!(
            self.cmp_within(other),
            Some(Ordering::Less | Ordering::Equal)
        )
    }

    /// Appends the client form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "{}-{}:{}", self.id.ms, self.id.seq, self.epoch);
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.epoch)
    }
}

/// A decimal u64 of 1 to 20 digits.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let o = Offset::parse("1733456789012-7:1733456789123456").unwrap();
        assert_eq!(
            o.id,
            StreamId {
                ms: 1733456789012,
                seq: 7
            }
        );
        assert_eq!(o.epoch, 1733456789123456);
        assert_eq!(o.to_string(), "1733456789012-7:1733456789123456");
        let mut v = Vec::new();
        o.write_to(&mut v);
        assert_eq!(v, o.to_string().as_bytes());
        for bad in [
            "",
            "1-2",
            "1-2:",
            ":3",
            "-2:3",
            "1-:3",
            "a-2:3",
            "1-2:3:4",
            "+1-2:3",
            " 1-2:3",
            "1-2:99999999999999999999999",
            "1-2-3:4",
        ] {
            assert_eq!(Offset::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Offset::parse(&"1".repeat(70)), None);
    }

    #[test]
    fn ordering_only_within_an_epoch() {
        let a = Offset::parse("5-1:9").unwrap();
        let b = Offset::parse("5-2:9").unwrap();
        let c = Offset::parse("1-0:8").unwrap();
        assert!(a.covered_by(&b) && a.covered_by(&a) && !b.covered_by(&a));
        assert!(!c.covered_by(&a) && !a.covered_by(&c));
        assert_eq!(
            StreamId {
                ms: 3,
                seq: u64::MAX
            }
            .next(),
            StreamId { ms: 4, seq: 0 }
        );
    }
}
