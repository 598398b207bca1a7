//! A history channel's state on a shard and the one decision taken per live delivery
//! (`take_live`): deliver it (moving the channel's offset), drop it (already delivered,
//! or after a gap a read will repair), or hold it while a read is in flight; plus what
//! each resuming subscriber holds (`Catch`). Pure state: the shard's I/O around it is
//! `history.rs`.

use std::sync::Arc;

use bytes::Bytes;

use super::key::Key;
use crate::offset::Offset;

/// The shard's history reads that must be asked again, and the tags that tell a
/// read's answer from a stale one.
#[derive(Debug, Default)]
pub struct Reads {
    /// Channels whose sync could not be asked or answered: asked again at the tick.
    pub retry: Vec<Arc<str>>,
    /// Catch-ups likewise: (channel, connection key, tag).
    pub catch_retry: Vec<(Arc<str>, Key, u32)>,
    /// The last tag given to a read.
    pub tag: u32,
}

impl Reads {
    /// A fresh tag (never 0: 0 means "no read in flight").
    pub fn next_tag(&mut self) -> u32 {
        self.tag = self.tag.wrapping_add(1).max(1);
        if self.tag == RETRY {
            self.tag = 1;
        }
        self.tag
    }
}

/// A history channel's local state: how far this shard has delivered, the read in
/// flight that brings it up to date, and the subscribers being caught up.
#[derive(Debug, Default)]
pub struct ChanHistory {
    /// The offset of the newest message delivered to the members (or the channel's
    /// offset when it was first read); `None` until the first read answered.
    pub last: Option<Offset>,
    /// The tag of the sync read in flight (0: none). While one is, deliveries are held.
    pub syncing: u32,
    /// Another sync is needed once the one in flight answers (a gap arrived meanwhile,
    /// or held frames overflowed).
    pub again: bool,
    /// Deliveries held while syncing, with their offsets.
    pub held: Vec<(Option<Offset>, Bytes)>,
    pub held_bytes: usize,
    /// A held frame without an offset was dropped (overflow): the members get `gap`.
    pub held_lost: bool,
    /// Subscribers being caught up (`Pos::catching` positions).
    pub catching: Vec<Catch>,
    /// The `since` of waiters that asked to resume.
    pub resume: Vec<(Key, Offset)>,
}

/// One subscriber being caught up: its history read covers (`since`, `upto`]; live
/// frames after `upto` are held for it meanwhile.
#[derive(Debug)]
pub struct Catch {
    pub key: Key,
    pub tag: u32,
    pub since: Offset,
    pub upto: Offset,
    pub held: Vec<(Option<Offset>, Bytes)>,
    pub held_bytes: usize,
    /// Held frames were dropped (too many): read history again after this read.
    pub overflowed: bool,
}

/// See `config::Tuning`.
const MAX_HELD: usize = crate::config::TUNING.max_held;
/// `ChanHistory::syncing` while a read waits to be asked again (deliveries are held).
pub(super) const RETRY: u32 = u32::MAX;

/// Decides what happens to a live delivery on a history channel: `true` to deliver it
/// now (the channel's offset moves to it, and subscribers being caught up get it
/// held); `false` when it was already delivered (dropped), is held because a read is
/// in flight, or comes after a gap that arrived during that read (dropped: the next
/// read brings it, after what the gap lost).
pub(super) fn take_live(h: &mut ChanHistory, offset: Option<Offset>, frame: &Bytes) -> bool {
    if let (Some(o), Some(last)) = (offset, h.last) {
        if o.covered_by(&last) {
            return false;
        }
    }
    if h.syncing != 0 {
        if h.again {
            // A gap came after the read was asked: what follows it must wait for the
            // next read (delivering it would step over the hole), which brings it too.
            h.held_lost |= offset.is_none();
            return false;
        }
        h.held_bytes += frame.len();
        if h.held_bytes > MAX_HELD {
            // Everything with an offset is read again from history afterwards.
            h.held_lost |= offset.is_none() || h.held.iter().any(|(o, _)| o.is_none());
            h.held.clear();
            h.held_bytes = 0;
            h.again = true;
        } else {
            h.held.push((offset, frame.clone()));
        }
        return false;
    }
    if let Some(o) = offset {
        h.last = Some(o);
    }
    for c in h.catching.iter_mut().filter(|c| !c.overflowed) {
        c.held_bytes += frame.len();
        if c.held_bytes > MAX_HELD {
            c.overflowed = true;
            c.held = Vec::new();
        } else {
            c.held.push((offset, frame.clone()));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset::StreamId;

    fn at(seq: u64) -> Option<Offset> {
        Some(Offset {
            id: StreamId { ms: 1, seq },
            epoch: 7,
        })
    }

    fn frame() -> Bytes {
        Bytes::from_static(b"x")
    }

    #[test]
    fn live_deliveries_are_taken_once_held_while_syncing_and_kept_for_catch_ups() {
        let mut h = ChanHistory {
            last: at(5),
            ..ChanHistory::default()
        };
        // Already delivered (a read brought it): dropped.
        assert!(!take_live(&mut h, at(5), &frame()));
        assert!(!take_live(&mut h, at(3), &frame()));
        // Newer: taken, and the channel moves on.
        assert!(take_live(&mut h, at(6), &frame()));
        assert_eq!(h.last, at(6));
        // Another epoch cannot be compared: taken.
        let other = Some(Offset {
            id: StreamId { ms: 0, seq: 1 },
            epoch: 8,
        });
        assert!(take_live(&mut h, other, &frame()));
        assert_eq!(h.last, other);
        // While a read is in flight: held, with its offset, the channel stays put.
        h.last = at(6);
        h.syncing = 3;
        assert!(!take_live(&mut h, at(7), &frame()));
        assert!(!take_live(&mut h, None, &frame()));
        assert_eq!(
            h.held.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![at(7), None]
        );
        assert_eq!(h.last, at(6));
        // Past the bound: dropped and owed a new read; a lost plain frame owes a gap.
        let big = Bytes::from(vec![0u8; MAX_HELD]);
        assert!(!take_live(&mut h, at(8), &big));
        assert!(h.held.is_empty() && h.again && h.held_lost);
        // After a gap during the read, nothing more is held: the next read brings it.
        assert!(!take_live(&mut h, at(9), &frame()));
        assert!(h.held.is_empty());
        // A subscriber being caught up gets what the members get, held for it.
        h.syncing = 0;
        h.again = false;
        h.catching.push(Catch {
            key: crate::shard::key::Key::from_raw(1),
            tag: 1,
            since: at(1).unwrap(),
            upto: at(6).unwrap(),
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
        });
        assert!(take_live(&mut h, at(9), &frame()));
        assert_eq!(h.catching[0].held.len(), 1);
        assert!(take_live(&mut h, at(10), &big));
        assert!(h.catching[0].overflowed && h.catching[0].held.is_empty());
    }
}
