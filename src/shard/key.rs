//! `Key`: a connection's name inside its shard (its slab slot), kept in subscription
//! lists, history catch-ups and `ConnId`. A leaf of the shard: data, no behaviour
//! beyond conversions; it never touches a connection.

use crate::ids::ConnId;

/// A connection's slot in its shard: the shard-local name of a connection (with `gen`,
/// `ConnId` names it to other threads). Kept as a `u32` in subscription lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Key(u32);

impl Key {
    /// The key of a raw `u32` kept in a subscription list or a `ConnId`.
    pub fn from_raw(raw: u32) -> Key {
        Key(raw)
    }

    /// The `u32` a subscription list or a `ConnId` keeps.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// Its slab slot (also its `mio::Token`).
    pub fn slot(self) -> usize {
        self.0 as usize
    }

    /// The key of slab slot (or `mio::Token`) `slot`; `None` past `u32` (never a
    /// connection: a shard holds far fewer).
    pub fn from_slot(slot: usize) -> Option<Key> {
        u32::try_from(slot).ok().map(Key)
    }

    /// The key this connection has in `ConnId` `id`.
    pub fn of(id: ConnId) -> Key {
        Key(id.key)
    }
}
