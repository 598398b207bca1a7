//! A shard's subscription index: channel → its local subscribers (dense vectors of slab
//! keys, so a delivery walks contiguous memory), with O(1) removal. Also tracks whether
//! the broker subscription is live and who waits for the `subscribed` reply: a waiter
//! is not a member yet (deliveries go to members only), so nobody gets a delivery or a
//! `gap` of a channel before its `subscribed`. A position with `WAITING` set is an
//! index into the waiters, one with `CATCHING` set an index into the subscribers still
//! being caught up from history (history channels), otherwise into the members.

use crate::hash::FastMap;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::chan_history::{Catch, ChanHistory};
use crate::offset::Offset;

/// One channel's local state.
#[derive(Debug)]
pub struct LocalChannel {
    pub name: Arc<str>,
    /// Slab keys of subscribed connections told `subscribed` (they get deliveries).
    pub members: Vec<u32>,
    /// Epoch of the broker subscribe this shard sent (echoed in confirmations).
    pub epoch: u32,
    /// The broker confirmed the subscription.
    pub live: bool,
    /// Slab keys of connections waiting for `subscribed` (at most once each).
    pub waiters: Vec<u32>,
    /// Frames received for this channel during the current loop turn, fanned out
    /// together at its end (see `Shard::fan_out`).
    pub pending: Vec<Bytes>,
    /// Bytes in `pending`.
    pub pending_bytes: usize,
    /// `pending` holds a frame that must never be dropped (a `gap` notice).
    pub pending_keep: bool,
    /// History state (history channels only).
    pub hist: Option<Box<ChanHistory>>,
}

impl LocalChannel {
    /// A history channel that has no offset yet (its first read is in flight):
    /// subscribers wait for it.
    pub fn unsynced(&self) -> bool {
        self.hist.as_ref().is_some_and(|h| h.last.is_none())
    }
}

/// What adding a member changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// First local subscriber: ask the broker, with this epoch.
    NewChannel(u32),
    /// The broker subscription is pending: wait for it.
    Pending,
    /// The broker subscription is live: reply now.
    Live,
}

/// Result of removing a member.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The member that took the removed one's place: (its key, its new position).
    pub moved: Option<(u32, u32)>,
    /// The channel has no local subscriber left: tell the broker.
    pub emptied: Option<Arc<str>>,
}

/// A local channel: its slot in the shard's `SubIndex` (typed, so it is never confused
/// with a connection's `Key` or a position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChanId(u32);

impl ChanId {
    fn slot(self) -> usize {
        self.0 as usize
    }
}

/// (key, new position) of the entry that took a removed one's place.
pub type Moved = Option<(u32, u32)>;

/// Set in a member position that indexes `waiters` rather than `members`.
pub const WAITING: u32 = 1 << 31;
/// Set in a member position that indexes the history `catching` list.
pub const CATCHING: u32 = 1 << 30;

#[derive(Debug, Default)]
pub struct SubIndex {
    by_name: FastMap<Arc<str>, ChanId>,
    channels: Slab<LocalChannel>,
    next_epoch: u32,
    /// Channels emptied whose broker unsubscribe could not be handed over (queue full):
    /// retried every loop turn until taken, cancelled if the channel is wanted again.
    pub unsubscribe_owed: Vec<Arc<str>>,
}

impl SubIndex {
    pub fn lookup(&self, name: &str) -> Option<ChanId> {
        self.by_name.get(name).copied()
    }

    pub fn channel(&self, id: ChanId) -> Option<&LocalChannel> {
        self.channels.get(id.slot())
    }

    pub fn channel_mut(&mut self, id: ChanId) -> Option<&mut LocalChannel> {
        self.channels.get_mut(id.slot())
    }

    /// Number of channels with local subscribers.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Adds `conn` to `name`: a member if the channel is live (and, with history, has
    /// its offset), else a waiter (remembering `since`). `history`: a new channel keeps
    /// history. Returns (channel id, position, what changed).
    pub fn add(
        &mut self,
        name: &str,
        conn: u32,
        history: bool,
        since: Option<Offset>,
    ) -> (ChanId, u32, Added) {
        if let Some(&id) = self.by_name.get(name) {
            let ch = &mut self.channels[id.slot()];
            if ch.live && !ch.unsynced() {
                ch.members.push(conn);
                return (id, (ch.members.len() - 1) as u32, Added::Live);
            }
            ch.waiters.push(conn);
            if let (Some(h), Some(since)) = (ch.hist.as_mut(), since) {
                h.resume.push((conn, since));
            }
            return (id, (ch.waiters.len() - 1) as u32 | WAITING, Added::Pending);
        }
        // Wanted again: an unsubscribe still owed to the broker is void (the broker
        // still has this shard, and the new subscribe refreshes its epoch).
        if !self.unsubscribe_owed.is_empty() {
            self.unsubscribe_owed.retain(|c| **c != *name);
        }
        self.next_epoch = self.next_epoch.wrapping_add(1);
        let epoch = self.next_epoch;
        let name: Arc<str> = Arc::from(name);
        let id = ChanId(self.channels.insert(LocalChannel {
            name: name.clone(),
            members: Vec::new(),
            epoch,
            live: false,
            waiters: vec![conn],
            pending: Vec::new(),
            pending_bytes: 0,
            pending_keep: false,
            hist: history.then(|| {
                Box::new(ChanHistory {
                    resume: since.map(|s| (conn, s)).into_iter().collect(),
                    ..ChanHistory::default()
                })
            }),
        }) as u32);
        self.by_name.insert(name, id);
        (id, WAITING, Added::NewChannel(epoch))
    }

    /// The broker confirmed channel `id`: it is live and its waiters become members.
    /// Returns the waiters (to be told `subscribed`); their new positions are
    /// `first..first + len`.
    pub fn confirm(&mut self, id: ChanId) -> (Vec<u32>, u32) {
        let Some(ch) = self.channels.get_mut(id.slot()) else {
            return (Vec::new(), 0);
        };
        ch.live = true;
        let first = ch.members.len() as u32;
        let waiters = std::mem::take(&mut ch.waiters);
        ch.members.extend_from_slice(&waiters);
        (waiters, first)
    }

    /// The broker connection was lost: no channel is live until confirmed again.
    /// Members stay members; new subscribers wait.
    pub fn unconfirm_all(&mut self) {
        for (_, ch) in self.channels.iter_mut() {
            ch.live = false;
        }
    }

    /// The broker subscription of `name` alone was lost (Redis Cluster: its primary
    /// failed or its slot moved): it is not live until confirmed again.
    pub fn unconfirm(&mut self, name: &str) {
        if let Some(id) = self.lookup(name) {
            if let Some(ch) = self.channels.get_mut(id.slot()) {
                ch.live = false;
            }
        }
    }

    /// Marks channel `id` live without moving its waiters (a history channel waits for
    /// its first read before anyone joins).
    pub fn set_live(&mut self, id: ChanId) {
        if let Some(ch) = self.channels.get_mut(id.slot()) {
            ch.live = true;
        }
    }

    /// Moves the member at `pos` of channel `id` to the catching list with `catch`.
    /// Returns its new position and the member that took its old place, if any.
    pub fn start_catch(&mut self, id: ChanId, pos: u32, catch: Catch) -> Option<(u32, Moved)> {
        let ch = self.channels.get_mut(id.slot())?;
        let h = ch.hist.as_mut()?;
        let at = pos as usize;
        if pos & (WAITING | CATCHING) != 0 || at >= ch.members.len() {
            return None;
        }
        ch.members.swap_remove(at);
        let moved = ch.members.get(at).map(|&k| (k, at as u32));
        h.catching.push(catch);
        Some(((h.catching.len() - 1) as u32 | CATCHING, moved))
    }

    /// Takes the catch-up of `key` with `tag` off channel `id`'s catching list and makes
    /// it a member. Returns the catch, the member's position, and the catching entry
    /// that took its old place, if any.
    pub fn end_catch(&mut self, id: ChanId, key: u32, tag: u32) -> Option<(Catch, u32, Moved)> {
        let ch = self.channels.get_mut(id.slot())?;
        let h = ch.hist.as_mut()?;
        let at = h
            .catching
            .iter()
            .position(|c| c.key == key && c.tag == tag)?;
        let catch = h.catching.swap_remove(at);
        let moved = h.catching.get(at).map(|c| (c.key, at as u32 | CATCHING));
        ch.members.push(key);
        Some((catch, (ch.members.len() - 1) as u32, moved))
    }

    /// Removes the member at `pos` of channel `id`.
    pub fn remove(&mut self, id: ChanId, pos: u32) -> Removed {
        let Some(ch) = self.channels.get_mut(id.slot()) else {
            return Removed::default();
        };
        let flag = pos & (WAITING | CATCHING);
        let at = (pos & !(WAITING | CATCHING)) as usize;
        let moved = if flag & CATCHING != 0 {
            let Some(h) = ch.hist.as_mut() else {
                return Removed::default();
            };
            if at >= h.catching.len() {
                return Removed::default();
            }
            h.catching.swap_remove(at);
            h.catching.get(at).map(|c| (c.key, at as u32 | flag))
        } else {
            let list = if flag != 0 {
                &mut ch.waiters
            } else {
                &mut ch.members
            };
            if at >= list.len() {
                return Removed::default();
            }
            let key = list.swap_remove(at);
            if flag != 0 {
                if let Some(h) = ch.hist.as_mut() {
                    h.resume.retain(|&(k, _)| k != key);
                }
            }
            list.get(at).map(|&k| (k, at as u32 | flag))
        };
        let catching = ch.hist.as_ref().is_some_and(|h| !h.catching.is_empty());
        if !ch.members.is_empty() || !ch.waiters.is_empty() || catching {
            return Removed {
                moved,
                emptied: None,
            };
        }
        let ch = self.channels.remove(id.slot());
        self.by_name.remove(&ch.name);
        Removed {
            moved: None,
            emptied: Some(ch.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_keeps_positions_consistent() {
        let mut idx = SubIndex::default();
        let (id, p0, a) = idx.add("c", 10, false, None);
        assert!(matches!(a, Added::NewChannel(_)));
        let (_, p1, a) = idx.add("c", 11, false, None);
        assert_eq!(a, Added::Pending);
        let (_, p2, _) = idx.add("c", 12, false, None);
        assert_eq!((p0, p1, p2), (WAITING, 1 | WAITING, 2 | WAITING));
        // Removing the first moves the last (12) into position 0.
        let r = idx.remove(id, WAITING);
        assert_eq!(r.moved, Some((12, WAITING)));
        assert_eq!(idx.channel(id).unwrap().waiters, vec![12, 11]);
        assert!(
            idx.channel(id).unwrap().members.is_empty(),
            "waiters get nothing"
        );
        assert_eq!(idx.confirm(id), (vec![12, 11], 0));
        assert_eq!(idx.channel(id).unwrap().members, vec![12, 11]);
        assert_eq!(idx.add("c", 13, false, None).2, Added::Live);
        idx.unconfirm_all();
        assert_eq!(idx.add("c", 14, false, None), (id, WAITING, Added::Pending));
        idx.remove(id, WAITING);
        idx.remove(id, 2);
        idx.remove(id, 1);
        let r = idx.remove(id, 0);
        assert_eq!(r.emptied.as_deref(), Some("c"));
        assert!(idx.lookup("c").is_none());
        assert!(idx.is_empty());
    }

    #[test]
    fn history_waiters_wait_for_the_offset_and_catch_ups_have_their_own_list() {
        let o = |seq| Offset {
            id: crate::offset::StreamId { ms: 1, seq },
            epoch: 1,
        };
        let mut idx = SubIndex::default();
        let (id, _, a) = idx.add("h", 1, true, Some(o(2)));
        assert!(matches!(a, Added::NewChannel(_)));
        idx.set_live(id);
        // Live but without an offset yet: a new subscriber waits too.
        assert_eq!(idx.add("h", 2, true, None).2, Added::Pending);
        assert_eq!(
            idx.channel(id).unwrap().hist.as_ref().unwrap().resume,
            vec![(1, o(2))]
        );
        idx.channel_mut(id).unwrap().hist.as_mut().unwrap().last = Some(o(5));
        assert_eq!(idx.confirm(id).0, vec![1, 2]);
        assert_eq!(idx.add("h", 3, true, None), (id, 2, Added::Live));
        let catch = |key| Catch {
            key,
            tag: key,
            since: o(2),
            upto: o(5),
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
        };
        // Member 1 (position 0) is caught up: 3 takes its place.
        let (pos, moved) = idx.start_catch(id, 0, catch(1)).unwrap();
        assert_eq!((pos, moved), (CATCHING, Some((3, 0))));
        let (pos, _) = idx.start_catch(id, 1, catch(2)).unwrap();
        assert_eq!(pos, 1 | CATCHING);
        assert_eq!(idx.channel(id).unwrap().members, vec![3]);
        // The first catch-up ends: a member again; the second moves into its slot.
        let (c, pos, moved) = idx.end_catch(id, 1, 1).unwrap();
        assert_eq!((c.key, pos, moved), (1, 1, Some((2, CATCHING))));
        assert!(idx.end_catch(id, 2, 99).is_none(), "a stale tag");
        // Removing everyone, catching included, empties the channel.
        idx.remove(id, CATCHING);
        idx.remove(id, 1);
        let r = idx.remove(id, 0);
        assert_eq!(r.emptied.as_deref(), Some("h"));
    }

    #[test]
    fn out_of_range_removal_is_harmless() {
        let mut idx = SubIndex::default();
        let (id, _, _) = idx.add("c", 1, false, None);
        assert_eq!(idx.remove(id, 5), Removed::default());
        assert_eq!(idx.remove(id, 5 | WAITING), Removed::default());
        assert_eq!(idx.remove(ChanId(99), 0), Removed::default());
    }
}
