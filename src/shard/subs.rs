//! A shard's subscription index: channel → its local subscribers (dense vectors of slab
//! keys, so a delivery walks contiguous memory), with O(1) removal. Also tracks whether
//! the broker subscription is live and who waits for the `subscribed` reply: a waiter
//! is not a member yet (deliveries go to members only), so nobody gets a delivery or a
//! `gap` of a channel before its `subscribed`. A position with `WAITING` set is an
//! index into the waiters, otherwise into the members.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

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

/// Set in a member position that indexes `waiters` rather than `members`.
pub const WAITING: u32 = 1 << 31;

#[derive(Debug, Default)]
pub struct SubIndex {
    by_name: HashMap<Arc<str>, u32>,
    channels: Slab<LocalChannel>,
    next_epoch: u32,
    /// Channels emptied whose broker unsubscribe could not be handed over (queue full):
    /// retried every loop turn until taken, cancelled if the channel is wanted again.
    pub unsubscribe_owed: Vec<Arc<str>>,
}

impl SubIndex {
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn channel(&self, id: u32) -> Option<&LocalChannel> {
        self.channels.get(id as usize)
    }

    pub fn channel_mut(&mut self, id: u32) -> Option<&mut LocalChannel> {
        self.channels.get_mut(id as usize)
    }

    /// Number of channels with local subscribers.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Adds `conn` to `name`: a member if the channel is live, else a waiter. Returns
    /// (channel id, position, what changed).
    pub fn add(&mut self, name: &str, conn: u32) -> (u32, u32, Added) {
        if let Some(&id) = self.by_name.get(name) {
            let ch = &mut self.channels[id as usize];
            if ch.live {
                ch.members.push(conn);
                return (id, (ch.members.len() - 1) as u32, Added::Live);
            }
            ch.waiters.push(conn);
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
        let id = self.channels.insert(LocalChannel {
            name: name.clone(),
            members: Vec::new(),
            epoch,
            live: false,
            waiters: vec![conn],
            pending: Vec::new(),
            pending_bytes: 0,
            pending_keep: false,
        }) as u32;
        self.by_name.insert(name, id);
        (id, WAITING, Added::NewChannel(epoch))
    }

    /// The broker confirmed channel `id`: it is live and its waiters become members.
    /// Returns the waiters (to be told `subscribed`); their new positions are
    /// `first..first + len`.
    pub fn confirm(&mut self, id: u32) -> (Vec<u32>, u32) {
        let Some(ch) = self.channels.get_mut(id as usize) else {
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

    /// Removes the member at `pos` of channel `id`.
    pub fn remove(&mut self, id: u32, pos: u32) -> Removed {
        let Some(ch) = self.channels.get_mut(id as usize) else {
            return Removed::default();
        };
        let flag = pos & WAITING;
        let list = if flag != 0 {
            &mut ch.waiters
        } else {
            &mut ch.members
        };
        let pos = (pos & !WAITING) as usize;
        if pos >= list.len() {
            return Removed::default();
        }
        list.swap_remove(pos);
        let moved = list.get(pos).map(|&k| (k, pos as u32 | flag));
        if !ch.members.is_empty() || !ch.waiters.is_empty() {
            return Removed {
                moved,
                emptied: None,
            };
        }
        let ch = self.channels.remove(id as usize);
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
        let (id, p0, a) = idx.add("c", 10);
        assert!(matches!(a, Added::NewChannel(_)));
        let (_, p1, a) = idx.add("c", 11);
        assert_eq!(a, Added::Pending);
        let (_, p2, _) = idx.add("c", 12);
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
        assert_eq!(idx.add("c", 13).2, Added::Live);
        idx.unconfirm_all();
        assert_eq!(idx.add("c", 14), (id, WAITING, Added::Pending));
        idx.remove(id, WAITING);
        idx.remove(id, 2);
        idx.remove(id, 1);
        let r = idx.remove(id, 0);
        assert_eq!(r.emptied.as_deref(), Some("c"));
        assert!(idx.lookup("c").is_none());
        assert!(idx.is_empty());
    }

    #[test]
    fn out_of_range_removal_is_harmless() {
        let mut idx = SubIndex::default();
        let (id, _, _) = idx.add("c", 1);
        assert_eq!(idx.remove(id, 5), Removed::default());
        assert_eq!(idx.remove(id, 5 | WAITING), Removed::default());
        assert_eq!(idx.remove(99, 0), Removed::default());
    }
}
