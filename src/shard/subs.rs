//! A shard's subscription index: channel → its local subscribers (dense vectors of slab
//! keys, so a delivery walks contiguous memory), with O(1) removal. Also tracks whether
//! the broker subscription is live and who waits for the `subscribed` reply: a waiter
//! is not a member yet (deliveries go to members only), so nobody gets a delivery or a
//! `gap` of a channel before its `subscribed`. A subscriber's position is a `Pos`:
//! an index into the waiters, into the subscribers still being caught up from history
//! (history channels), or into the members. Pure state: no I/O, no clock.

use crate::hash::FastMap;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::chan_history::{Catch, ChanHistory};
use super::key::Key;
use crate::offset::Offset;

/// One channel's local state.
#[derive(Debug)]
pub struct LocalChannel {
    pub name: Arc<str>,
    /// Slab keys of subscribed connections told `subscribed` (they get deliveries).
    pub members: Vec<Key>,
    /// Epoch of the broker subscribe this shard sent (echoed in confirmations).
    pub epoch: u32,
    /// The broker confirmed the subscription.
    pub live: bool,
    /// Slab keys of connections waiting for `subscribed` (at most once each).
    pub waiters: Vec<Key>,
    /// Frames received for this channel during the current loop turn, fanned out
    /// together at its end (see `Fanout::fan_out`).
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
    pub moved: Moved,
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
pub type Moved = Option<(Key, Pos)>;

/// A subscriber's position in a local channel: an index into its members, its waiters
/// or its history catching list, which one told by a flag bit (so a connection's
/// subscription stays one `u32` wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos(u32);

impl Pos {
    /// Set in a position that indexes `waiters` rather than `members`.
    const WAITING: u32 = 1 << 31;
    /// Set in a position that indexes the history `catching` list.
    const CATCHING: u32 = 1 << 30;
    const FLAGS: u32 = Pos::WAITING | Pos::CATCHING;

    /// Index `at` of the members (gets deliveries).
    pub fn member(at: usize) -> Pos {
        Pos(at as u32)
    }

    /// Index `at` of the waiters (told `subscribed` when the broker confirms).
    pub fn waiting(at: usize) -> Pos {
        Pos(at as u32 | Pos::WAITING)
    }

    /// Index `at` of the history catching list.
    pub fn catching(at: usize) -> Pos {
        Pos(at as u32 | Pos::CATCHING)
    }

    /// Waiting for the broker's (or the first history read's) confirmation.
    pub fn is_waiting(self) -> bool {
        self.0 & Pos::WAITING != 0
    }

    /// Being caught up from history.
    pub fn is_catching(self) -> bool {
        self.0 & Pos::CATCHING != 0
    }

    /// A member: gets deliveries.
    pub fn is_member(self) -> bool {
        self.0 & Pos::FLAGS == 0
    }

    /// The index into the list the flags name.
    pub fn index(self) -> usize {
        (self.0 & !Pos::FLAGS) as usize
    }

    /// Index `at` of the same list.
    fn at(self, at: usize) -> Pos {
        Pos(at as u32 | (self.0 & Pos::FLAGS))
    }
}

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
        conn: Key,
        history: bool,
        since: Option<Offset>,
    ) -> (ChanId, Pos, Added) {
        if let Some(&id) = self.by_name.get(name) {
            let ch = &mut self.channels[id.slot()];
            if ch.live && !ch.unsynced() {
                ch.members.push(conn);
                return (id, Pos::member(ch.members.len() - 1), Added::Live);
            }
            ch.waiters.push(conn);
            if let (Some(h), Some(since)) = (ch.hist.as_mut(), since) {
                h.resume.push((conn, since));
            }
            return (id, Pos::waiting(ch.waiters.len() - 1), Added::Pending);
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
        (id, Pos::waiting(0), Added::NewChannel(epoch))
    }

    /// The broker confirmed channel `id`: it is live and its waiters become members.
    /// Returns the waiters (to be told `subscribed`); their new positions are
    /// `Pos::member(first..first + len)`.
    pub fn confirm(&mut self, id: ChanId) -> (Vec<Key>, usize) {
        let Some(ch) = self.channels.get_mut(id.slot()) else {
            return (Vec::new(), 0);
        };
        ch.live = true;
        let first = ch.members.len();
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
    pub fn start_catch(&mut self, id: ChanId, pos: Pos, catch: Catch) -> Option<(Pos, Moved)> {
        let ch = self.channels.get_mut(id.slot())?;
        let h = ch.hist.as_mut()?;
        let at = pos.index();
        if !pos.is_member() || at >= ch.members.len() {
            return None;
        }
        ch.members.swap_remove(at);
        let moved = ch.members.get(at).map(|&k| (k, Pos::member(at)));
        h.catching.push(catch);
        Some((Pos::catching(h.catching.len() - 1), moved))
    }

    /// Takes the catch-up of `key` with `tag` off channel `id`'s catching list and makes
    /// it a member. Returns the catch, the member's position, and the catching entry
    /// that took its old place, if any.
    pub fn end_catch(&mut self, id: ChanId, key: Key, tag: u32) -> Option<(Catch, Pos, Moved)> {
        let ch = self.channels.get_mut(id.slot())?;
        let h = ch.hist.as_mut()?;
        let at = h
            .catching
            .iter()
            .position(|c| c.key == key && c.tag == tag)?;
        let catch = h.catching.swap_remove(at);
        let moved = h.catching.get(at).map(|c| (c.key, Pos::catching(at)));
        ch.members.push(key);
        Some((catch, Pos::member(ch.members.len() - 1), moved))
    }

    /// Removes the member at `pos` of channel `id`.
    pub fn remove(&mut self, id: ChanId, pos: Pos) -> Removed {
        let Some(ch) = self.channels.get_mut(id.slot()) else {
            return Removed::default();
        };
        let at = pos.index();
        let moved = if pos.is_catching() {
            let Some(h) = ch.hist.as_mut() else {
                return Removed::default();
            };
            if at >= h.catching.len() {
                return Removed::default();
            }
            h.catching.swap_remove(at);
            h.catching.get(at).map(|c| (c.key, pos.at(at)))
        } else {
            let list = if pos.is_waiting() {
                &mut ch.waiters
            } else {
                &mut ch.members
            };
            if at >= list.len() {
                return Removed::default();
            }
            let key = list.swap_remove(at);
            if pos.is_waiting() {
                if let Some(h) = ch.hist.as_mut() {
                    h.resume.retain(|&(k, _)| k != key);
                }
            }
            list.get(at).map(|&k| (k, pos.at(at)))
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

    fn k(n: u32) -> Key {
        Key::from_raw(n)
    }

    fn ks(ns: &[u32]) -> Vec<Key> {
        ns.iter().map(|&n| k(n)).collect()
    }

    #[test]
    fn add_remove_keeps_positions_consistent() {
        let mut idx = SubIndex::default();
        let (id, p0, a) = idx.add("c", k(10), false, None);
        assert!(matches!(a, Added::NewChannel(_)));
        let (_, p1, a) = idx.add("c", k(11), false, None);
        assert_eq!(a, Added::Pending);
        let (_, p2, _) = idx.add("c", k(12), false, None);
        assert_eq!(
            (p0, p1, p2),
            (Pos::waiting(0), Pos::waiting(1), Pos::waiting(2))
        );
        // Removing the first moves the last (12) into position 0.
        let r = idx.remove(id, Pos::waiting(0));
        assert_eq!(r.moved, Some((k(12), Pos::waiting(0))));
        assert_eq!(idx.channel(id).unwrap().waiters, ks(&[12, 11]));
        assert!(
            idx.channel(id).unwrap().members.is_empty(),
            "waiters get nothing"
        );
        assert_eq!(idx.confirm(id), (ks(&[12, 11]), 0));
        assert_eq!(idx.channel(id).unwrap().members, ks(&[12, 11]));
        assert_eq!(idx.add("c", k(13), false, None).2, Added::Live);
        idx.unconfirm_all();
        assert_eq!(
            idx.add("c", k(14), false, None),
            (id, Pos::waiting(0), Added::Pending)
        );
        idx.remove(id, Pos::waiting(0));
        idx.remove(id, Pos::member(2));
        idx.remove(id, Pos::member(1));
        let r = idx.remove(id, Pos::member(0));
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
        let (id, _, a) = idx.add("h", k(1), true, Some(o(2)));
        assert!(matches!(a, Added::NewChannel(_)));
        idx.set_live(id);
        // Live but without an offset yet: a new subscriber waits too.
        assert_eq!(idx.add("h", k(2), true, None).2, Added::Pending);
        assert_eq!(
            idx.channel(id).unwrap().hist.as_ref().unwrap().resume,
            vec![(k(1), o(2))]
        );
        idx.channel_mut(id).unwrap().hist.as_mut().unwrap().last = Some(o(5));
        assert_eq!(idx.confirm(id).0, ks(&[1, 2]));
        assert_eq!(
            idx.add("h", k(3), true, None),
            (id, Pos::member(2), Added::Live)
        );
        let catch = |n: u32| Catch {
            key: k(n),
            tag: n,
            since: o(2),
            upto: o(5),
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
        };
        // Member 1 (position 0) is caught up: 3 takes its place.
        let (pos, moved) = idx.start_catch(id, Pos::member(0), catch(1)).unwrap();
        assert_eq!(
            (pos, moved),
            (Pos::catching(0), Some((k(3), Pos::member(0))))
        );
        let (pos, _) = idx.start_catch(id, Pos::member(1), catch(2)).unwrap();
        assert_eq!(pos, Pos::catching(1));
        assert_eq!(idx.channel(id).unwrap().members, ks(&[3]));
        // The first catch-up ends: a member again; the second moves into its slot.
        let (c, pos, moved) = idx.end_catch(id, k(1), 1).unwrap();
        assert_eq!(
            (c.key, pos, moved),
            (k(1), Pos::member(1), Some((k(2), Pos::catching(0))))
        );
        assert!(idx.end_catch(id, k(2), 99).is_none(), "a stale tag");
        // Removing everyone, catching included, empties the channel.
        idx.remove(id, Pos::catching(0));
        idx.remove(id, Pos::member(1));
        let r = idx.remove(id, Pos::member(0));
        assert_eq!(r.emptied.as_deref(), Some("h"));
    }

    #[test]
    fn out_of_range_removal_is_harmless() {
        let mut idx = SubIndex::default();
        let (id, _, _) = idx.add("c", k(1), false, None);
        assert_eq!(idx.remove(id, Pos::member(5)), Removed::default());
        assert_eq!(idx.remove(id, Pos::waiting(5)), Removed::default());
        assert_eq!(idx.remove(ChanId(99), Pos::member(0)), Removed::default());
    }
}
