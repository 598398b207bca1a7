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
//!   (Redis Cluster: broker::cluster::{reader,writer}, one SSUBSCRIBE / SPUBLISH conn per primary)
//!   reader ──ShardMsg::Deliver(shared Bytes)──▶ shard inbox + mio::Waker
//!   (embedded mode: broker::memory, one thread, same Router, same messages)
//!   (--broker-threads inline: the reader and writer run on
//!    shard 0's loop, broker::redis::driver::Inline; no threads of their own)
//! ```
//!
//! # Layers
//!
//! Bottom to top. A module imports only from modules on lower layers (and from itself);
//! `tests/layers.rs` fails the build of the suite if a `crate::` path points up or
//! sideways, so the module graph has no cycle.
//!
//! ```text
//! 6  server
//! 5  shard
//! 4  broker presence
//! 3  msg api http
//! 2  protocol metrics redis auth
//! 1  config latency ws ids inbox health offset hash
//! ```
//!
//! | module | owns | never |
//! |---|---|---|
//! | [`config`] | flags, env, TOML → `Config` + `Limits` | read at run time |
//! | [`latency`] | the publish→send histogram | lock |
//! | [`ws`] | handshake parsing, RFC 6455 framing, permessage-deflate (negotiation, compress once, bounded inflate) | I/O, per-connection compression state |
//! | [`ids`] | `ConnId`, `ShardId` | behaviour |
//! | [`offset`] | history offsets: stream id + epoch, parse and format | decide |
//! | [`inbox`] | a shard's queues and the waker that interrupts its poll | block |
//! | [`health`] | the node's health flags | I/O |
//! | [`hash`] | the fast, randomly seeded hasher of per-message lookups | own state |
//! | [`protocol`] | protocol v1 commands, replies, envelope | I/O |
//! | [`metrics`] | counters and their Prometheus text (presence's too) | lock |
//! | [`auth`] | JWT verification → `Grant` (user, expiry, channel patterns) | I/O, log a token |
//! | [`redis`] | RESP, the Redis URL, TLS (`rediss://`, rustls), the non-blocking link (host names resolved off its thread), the blocking client (one Redis or a cluster), Redis Cluster slots and slot maps | decide what to send |
//! | [`msg`] | `BrokerCmd`, `ShardMsg`, `BrokerHandle`: what threads send each other | decide |
//! | [`api`] | HTTP API parsing, API-key and origin rules | I/O |
//! | [`http`] | `/healthz`, `/metrics` answers, every HTTP response builder | keep a connection open |
//! | [`broker`] | the node routing table, the Redis reader and writer (state machines, run on their own threads or on shard 0's loop), the Redis Cluster reader and writer (`broker::cluster`: one connection per primary), dispatch | block on a shard |
//! | [`presence`] | the connection manager: presence thread, Redis layout | make a shard wait |
//! | [`shard`] | client sockets, sessions, local subscriptions, per-connection queues | block on anything but `poll` |
//! | [`server`] | starting and stopping threads | touch sockets of clients |

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod hash;
pub mod health;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod latency;
pub mod metrics;
pub mod msg;
pub mod offset;
pub mod presence;
pub mod protocol;
pub mod redis;
pub mod server;
pub mod shard;
pub mod ws;
