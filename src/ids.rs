//! Identities that cross threads: which shard, which connection. Plain data, no
//! behaviour; every layer may name them.

/// Index of a shard (0..shards, at most 64).
pub type ShardId = usize;

/// A connection's identity across threads: slab key plus a generation, so an answer
/// meant for a closed connection never reaches the one that reused its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub key: u32,
    pub gen: u32,
}
