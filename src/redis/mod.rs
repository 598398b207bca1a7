//! The Redis layer every thread that talks to Redis shares: the RESP codec (`resp`), the
//! URL (`url`), TLS for `rediss://` (`tls`), the non-blocking link with reconnect
//! backoff that the broker's reader and writer poll (`link`), and the blocking
//! pipelined client of the presence thread (`blocking`), and the pure Redis Cluster pieces
//! (`cluster`: key slots, slot maps, redirections). Connections and codecs only:
//! what to subscribe, publish or store is decided by the broker and presence above it.

pub mod blocking;
pub mod cluster;
pub mod link;
pub mod resp;
pub mod tls;
pub mod url;

pub use url::RedisUrl;
