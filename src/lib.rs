//! fanout: a WebSocket pub/sub fan-out engine that scales horizontally through Redis.
//!
//! # Architecture map (details in docs/architecture.md)
//!
//! ```text
//!  clients ──TCP──▶ shard 0 (accepts, hands sockets round robin) ─┐
//!                   shard 1..N-1                                   │  each shard: mio Poll,
//!                                                                  │  Slab<Conn>, SubIndex
//!   shard ──BrokerCmd──▶ broker::redis::reader  (SUBSCRIBE conn, Router)
//!   shard ──BrokerCmd──▶ broker::redis::writer  (PUBLISH conn, pipelined)
//!   reader ──ShardMsg::Deliver(shared Bytes)──▶ shard inbox + mio::Waker
//!   (embedded mode: broker::memory, one thread, same Router, same messages)
//! ```
//!
//! | module | owns | never |
//! |---|---|---|
//! | [`config`] | flags, env, TOML → `Config` + `Limits` | read at run time |
//! | [`server`] | starting and stopping threads, health flags | touch sockets of clients |
//! | [`shard`] | client sockets, local subscriptions, per-connection queues | block on anything but `poll` |
//! | [`broker`] | the node routing table, Redis connections, dispatch | block on a shard |
//! | [`ws`] | handshake parsing and RFC 6455 framing | I/O |
//! | [`protocol`] | protocol v1 commands, replies, envelope | I/O |
//! | [`http`] | `/healthz`, `/metrics` answers | keep a connection open |
//! | [`api`] | HTTP API parsing, API-key and origin rules | I/O |
//! | [`presence`] | the connection manager: presence thread, Redis layout | make a shard wait |
//! | [`metrics`] | counters and their Prometheus text | lock |
//! | [`latency`] | the publish→send histogram | lock |

pub mod api;
pub mod broker;
pub mod config;
pub mod health;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod latency;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod ws;
