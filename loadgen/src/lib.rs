//! loadgen: load generator for WebSocket pub/sub servers speaking fanout protocol v1
//! (library part, so integration tests can drive the pieces directly).

#![recursion_limit = "256"]

pub mod cli;
pub mod client;
pub mod clock;
pub mod control;
pub mod drain;
pub mod http_pub;
pub mod net;
pub mod payload;
pub mod plan;
pub mod plot;
pub mod procs;
pub mod procstat;
pub mod publisher;
pub mod redis_pub;
pub mod report;
pub mod scan;
pub mod scenarios;
pub mod seq;
pub mod stats;
pub mod subs;
pub mod subset;
pub mod wsframe;
