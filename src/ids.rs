//! Identities that cross threads: which shard, which connection. Plain data, no
//! behaviour; every layer may name them.

/// A shard: its index among the node's shards (0..64, so a set of shards is a `u64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(u8);

impl ShardId {
    /// Most shards a node runs (a set of shards is one `u64` bit mask).
    pub const MAX: usize = 64;

    /// Shard number `index`; panics past `MAX` (the configuration caps `--shards`).
    pub fn new(index: usize) -> ShardId {
        assert!(index < Self::MAX, "shard index {index} out of range");
        ShardId(index as u8)
    }

    /// Its position in per-shard vectors.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Its bit in a shard set.
    pub fn bit(self) -> u64 {
        1u64 << self.0
    }

    /// The shards of a set, lowest first.
    pub fn each(mut set: u64) -> impl Iterator<Item = ShardId> {
        std::iter::from_fn(move || {
            if set == 0 {
                return None;
            }
            let s = set.trailing_zeros() as u8;
            set &= set - 1;
            Some(ShardId(s))
        })
    }

    /// Every shard of a node with `n` shards.
    pub fn all(n: usize) -> impl Iterator<Item = ShardId> {
        (0..n.min(Self::MAX)).map(ShardId::new)
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sets_are_bit_masks() {
        let set = ShardId::new(0).bit() | ShardId::new(5).bit() | ShardId::new(63).bit();
        let ids: Vec<usize> = ShardId::each(set).map(ShardId::index).collect();
        assert_eq!(ids, [0, 5, 63]);
        assert_eq!(ShardId::all(3).count(), 3);
    }
}

/// A connection's identity across threads: slab key plus a generation, so an answer
/// meant for a closed connection never reaches the one that reused its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub key: u32,
    pub gen: u32,
}
