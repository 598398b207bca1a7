//! The Redis layer every thread that talks to Redis shares: the RESP codec (`resp`), the
//! URL (`url`), TLS for `rediss://` (`tls`), the non-blocking link with reconnect
//! backoff that the broker's reader and writer poll (`link`), and the blocking
//! pipelined client of the presence thread (`blocking`, and `cluster_blocking` for Redis
//! Cluster), and the pure Redis Cluster pieces (`cluster`: key slots, slot maps,
//! redirections). Connections and codecs only:
//! what to subscribe, publish or store is decided by the broker and presence above it.

pub mod blocking;
pub mod cluster;
pub mod cluster_blocking;
pub mod link;
pub mod resolve;
pub mod resp;
pub mod tls;
pub mod url;

pub use url::RedisUrl;

/// The presence thread's connection: one Redis, or a Redis Cluster.
pub enum BlockingRedis {
    One(blocking::Client),
    Cluster(cluster_blocking::ClusterClient),
}

impl BlockingRedis {
    pub fn run(&mut self, pipe: &blocking::Pipe) -> std::io::Result<Vec<resp::Value>> {
        match self {
            BlockingRedis::One(c) => c.run(pipe),
            BlockingRedis::Cluster(c) => c.run(pipe),
        }
    }

    pub fn is_up(&self) -> bool {
        match self {
            BlockingRedis::One(c) => c.is_up(),
            BlockingRedis::Cluster(c) => c.is_up(),
        }
    }
}
