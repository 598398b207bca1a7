//! The command line: every flag with its help text (what `fanout --help` prints). Only
//! the shape of the flags; ranges, precedence and the TOML file are resolved in
//! `Config::resolve`.
//!
//! The field docs are the `--help` text, written for a terminal (`[default: …]`,
//! `<hostname>`), not rustdoc: its link and HTML checks are off here.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use super::{BrokerThreads, LogFormat, OnOff, SlowPolicy};

/// fanout: a WebSocket pub/sub server that scales horizontally through Redis.
///
/// Without --redis it runs alone with an in-process bus. With --redis every node on the
/// same Redis acts as one: a publish on any node, or any Redis PUBLISH, reaches every
/// subscriber on every node. Each flag can also be set in the TOML file given with
/// --config (same names, with underscores: max_message = 65536).
#[derive(Parser, Debug, Default)]
#[command(name = "fanout", version, about, long_about)]
pub struct Args {
    /// WebSocket + HTTP listen address [default: 127.0.0.1:3000; env PORT sets only the port]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Redis URL, redis[s]://[[user]:password@]host[:port][/db] (rediss: TLS; user and password percent-encoded; port 6379; db 0); join the cluster through it [default: none, embedded in-process bus]
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// Redis Cluster seed nodes, host:port,host:port,... (or a redis+cluster:// / rediss+cluster:// URL with the --redis grammar, credentials and TLS applying to every node); sharded pub/sub (SSUBSCRIBE/SPUBLISH). Excludes --redis [default: none]
    #[arg(long, env = "REDIS_CLUSTER", value_name = "SEEDS")]
    pub redis_cluster: Option<String>,

    /// PEM file of the CA certificate(s) that sign Redis's TLS certificate (rediss:// only); they replace the built-in Mozilla roots [default: built-in roots]
    #[arg(long, env = "REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,

    /// Do not verify Redis's TLS certificate or host name (rediss:// only). For tests only: anyone on the path can read and change the traffic [default: off]
    #[arg(long, env = "REDIS_INSECURE")]
    pub redis_insecure: bool,

    /// This node's name in presence and logs [default: <hostname>-<pid>]
    #[arg(long, env = "SERVER_ID", value_name = "ID")]
    pub server_id: Option<String>,

    /// Event-loop threads, 1–64 [default: number of cores, at most 64]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Where the Redis reader and writer run: on threads of their own, or inline on shard 0's event loop (no hand-off or wake-up between the shard and Redis; --redis only, Redis Cluster keeps its threads) [default: own]
    #[arg(long, value_enum, value_name = "WHERE")]
    pub broker_threads: Option<BrokerThreads>,

    /// Largest client message in bytes; larger ones get a too_large error; 1–16777216 [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,

    /// Subscriptions one connection may hold; 1–1048576 [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Longest channel name in bytes; 1–65536 [default: 256]
    #[arg(long, value_name = "BYTES")]
    pub max_channel_len: Option<usize>,

    /// Bytes queued for one slow connection before the slow-consumer policy applies; 1024–1073741824 [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub outbound_limit: Option<usize>,

    /// WebSocket connections one client address may hold on this node; more get 429; 0 = no limit; 0–1000000 [default: 0]
    #[arg(long, value_name = "N")]
    pub max_conns_per_ip: Option<u32>,

    /// WebSocket connections one authenticated user (the token's sub) may hold on this node; more get 429 on the upgrade or close 1008; 0 = no limit; 0–1000000 [default: 0]
    #[arg(long, value_name = "N")]
    pub max_conns_per_user: Option<u32>,

    /// Publishes one WebSocket connection may make per second (bursts of as many); more get rate_limited; 0 = no limit; 0–1000000 [default: 0]
    #[arg(long, value_name = "N")]
    pub publish_rate: Option<u32>,

    /// Negotiate permessage-deflate (RFC 7692) on WebSocket upgrades: each delivery is compressed once per shard and shared by every subscriber that negotiated it [default: off]
    #[arg(long, value_name = "on|off")]
    pub compression: Option<OnOff>,

    /// What to do with a slow consumer: close it (code 4000) or drop its oldest frames [default: close]
    #[arg(long, value_enum, value_name = "POLICY")]
    pub slow_consumer: Option<SlowPolicy>,

    /// Seconds between server pings; a client silent for two intervals is dropped; 1–86400 [default: 25]
    #[arg(long, value_name = "SECS")]
    pub ping_interval: Option<u64>,

    /// Seconds a client has to complete its handshake (or HTTP request); 1–86400 [default: 10]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<u64>,

    /// Seconds a SIGTERM/SIGINT shutdown may take before the node exits anyway; 1–86400 [default: 5]
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// Pacing of a shard's flushes under high per-connection message rates: while connections
    /// get two or more messages per flush, flush at most once per this many microseconds, so each
    /// write carries every frame of the interval (0: never pace); 0–100000 [default: 10000]
    #[arg(long, value_name = "MICROS")]
    pub flush_interval: Option<u64>,

    /// Serve a WebSocket echo endpoint on this path, for conformance tests (Autobahn) [default: off]
    #[arg(long, value_name = "PATH")]
    pub echo_path: Option<String>,

    /// Comma list of allowed Origin values for WebSocket upgrades (others get 403; requests without Origin are allowed; in the config file also an array) [default: any]
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "LIST")]
    pub allowed_origins: Option<String>,

    /// Key required by the HTTP API (Authorization: Bearer KEY or X-Api-Key: KEY) [default: none, API open]
    #[arg(long, env = "API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Log line format on stderr: text, or json (one object per line, for log pipelines) [default: text]
    #[arg(long, env = "LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Whether clients may publish over the WebSocket; off: only the HTTP API and Redis publish (WebSocket publishes get forbidden) [default: on]
    #[arg(long, value_name = "on|off")]
    pub client_publish: Option<OnOff>,

    /// Presence (connection manager): in Redis with --redis, in-process otherwise [default: on]
    #[arg(long, value_name = "on|off")]
    pub presence: Option<OnOff>,

    /// Take the presence user id from the `user` query parameter of the upgrade URL (?user=U) instead of the connection id [default: off]
    #[arg(long)]
    pub presence_user_param: bool,

    /// Seconds between presence heartbeats (one pipelined round per node); the node's liveness key lives 3 intervals; 1–3600 [default: 30]
    #[arg(long, value_name = "SECS")]
    pub presence_heartbeat: Option<u64>,

    /// TTL in seconds of each connections:{user} hash, refreshed by heartbeats; longer than the heartbeat, at most 86400 [default: 120]
    #[arg(long, value_name = "SECS")]
    pub presence_ttl: Option<u64>,

    /// Require a JWT signed with this HS256 secret on every WebSocket connection (auth on) [default: none, auth off]
    #[arg(
        long,
        env = "JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// Require a JWT verified with this PEM public key (RS256 for an RSA key, ES256 for an EC P-256 key) on every WebSocket connection (auth on) [default: none, auth off]
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim of connection tokens [default: not checked]
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Messages of history kept per channel (0 = off); the config file's [[namespace]] tables can set it per channel prefix; 0–1000000 [default: 0]
    #[arg(long, value_name = "N")]
    pub history_size: Option<u64>,

    /// Seconds a message stays in history (0 = no time limit, only --history-size bounds it); 0–2592000 [default: 0]
    #[arg(long, value_name = "SECS")]
    pub history_ttl: Option<u64>,

    /// TOML file with any of the settings above, and [[namespace]] tables (prefix, history_size, history_ttl, subscribe, publish)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}
