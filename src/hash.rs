//! The hasher of the maps the hot path looks up once per message (the router's routes,
//! a shard's channel index): foldhash, seeded at random per map, instead of the
//! standard library's SipHash-1-3. Channel names are short, and SipHash costs several
//! times more on short keys (`cargo bench --bench hash`). Owns nothing but the types;
//! never used for maps a client could fill without limits (they all have limits).
//!
//! foldhash is not a cryptographic hash; its random per-map seed is what keeps a client
//! that chooses channel names from precomputing collisions, the same defence as the
//! standard `RandomState` (and hashbrown's default).

/// A `HashMap` with the fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An empty `FastMap`.
pub fn fast_map<K, V>() -> FastMap<K, V> {
    FastMap::with_hasher(foldhash::fast::RandomState::default())
}
