//! Configuration: command-line flags, environment variables and an optional TOML file,
//! resolved once at start into `Config`. Every limit lives in `Limits`, in one place.
//! Precedence: flag > environment variable > `--config` file > built-in default.

mod args;
mod jwt;
mod namespace;
mod presence;
mod redis_tls;
mod tuning;

pub use args::Args;
pub use jwt::{JwtConfig, JwtKey};
pub use namespace::{
    Namespace, Namespaces, PublishRule, SubscribeRule, HISTORY_SIZE, HISTORY_TTL, MAX_NAMESPACES,
};
use presence::resolve_presence;
pub use presence::{OnOff, PresenceConfig};
pub use redis_tls::{read_ca, RedisCa, RedisTls};
pub use tuning::{Tuning, TUNING};

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Limits on everything a client controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest client message (bytes of payload after reassembly).
    pub max_message: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Longest channel name, in bytes.
    pub max_channel_len: usize,
    /// Bytes queued for one connection before the slow-consumer policy applies.
    pub outbound_limit: usize,
    /// Largest HTTP request head.
    pub max_request_head: usize,
    /// Largest HTTP request body (POST /api/publish).
    pub max_request_body: usize,
    /// WebSocket connections one client address may hold on this node (0: no limit).
    pub max_conns_per_ip: u32,
    /// WebSocket connections one authenticated user (`sub`) may hold on this node (0: no
    /// limit).
    pub max_conns_per_user: u32,
    /// Publishes one connection may make per second, with bursts of as many (0: no
    /// limit).
    pub publish_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 * 1024,
            max_subscriptions: 1024,
            max_channel_len: 256,
            outbound_limit: 1024 * 1024,
            max_request_head: 8 * 1024,
            max_request_body: 1024 * 1024,
            max_conns_per_ip: 0,
            max_conns_per_user: 0,
            publish_rate: 0,
        }
    }
}

/// Accepted range of `--max-conns-per-ip` and `--publish-rate` (0 = no limit).
pub const PER_CLIENT: RangeInclusive<u32> = 0..=1_000_000;
/// Accepted range of `--max-message` (bytes): 16 MiB at most.
pub const MAX_MESSAGE: RangeInclusive<usize> = 1..=16 * 1024 * 1024;
/// Accepted range of `--max-subscriptions`.
pub const MAX_SUBSCRIPTIONS: RangeInclusive<usize> = 1..=1_048_576;
/// Accepted range of `--max-channel-len` (bytes).
pub const MAX_CHANNEL_LEN: RangeInclusive<usize> = 1..=65_536;
/// Accepted range of `--outbound-limit` (bytes): 1 KiB to 1 GiB.
pub const OUTBOUND_LIMIT: RangeInclusive<usize> = 1024..=1024 * 1024 * 1024;
/// Accepted range of `--shards`: the router keeps a 64-bit shard mask per channel.
pub const SHARDS: RangeInclusive<usize> = 1..=64;
/// Accepted range of every duration flag in seconds (`--ping-interval`,
/// `--handshake-timeout`, `--shutdown-timeout`, `--presence-ttl`): one day at most, so
/// no sum, product (`2 × ping`, `ttl × 1000`) or `as u32` of one can overflow.
pub const SECONDS: RangeInclusive<u64> = 1..=86_400;
/// Accepted range of `--presence-heartbeat` (seconds): one hour at most.
pub const HEARTBEAT_SECONDS: RangeInclusive<u64> = 1..=3_600;
/// Accepted range of `--flush-interval` (microseconds): 0.1 s at most.
pub const FLUSH_MICROS: RangeInclusive<u64> = 0..=100_000;

/// `Ok(value)` when `value` is in `range`, else the error printed at startup.
fn bounded<T>(flag: &str, value: T, range: RangeInclusive<T>, unit: &str) -> Result<T, String>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(value);
    }
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    Err(format!(
        "--{flag} must be between {} and {}{unit} (got {value}; {} in a config file)",
        range.start(),
        range.end(),
        flag.replace('-', "_")
    ))
}

/// What happens to a connection whose outbound queue passes `outbound_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SlowPolicy {
    /// Close it with code 4000 "slow consumer".
    #[default]
    Close,
    /// Drop its oldest queued frames and send it one `slow_consumer` error.
    DropOldest,
}

/// Where the Redis reader and writer run (`--broker-threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerThreads {
    /// Each on its own thread (the shards hand them commands through queues).
    Own,
    /// On shard 0's event loop: no threads of their own, no hand-off or wake-up
    /// between the shard and Redis (Redis Cluster stays on its own threads).
    Inline,
}

/// A list setting in the TOML file: an array of strings (`["a", "b"]`) or, like the
/// flag, one comma-separated string (`"a,b"`).
#[derive(Debug, Default, PartialEq, Eq)]
struct StringList(Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StringList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Format of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

/// The resolved configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: the embedded in-process bus. A `redis+cluster://` or
    /// `rediss+cluster://` URL (`--redis-cluster`): Redis Cluster, see `is_cluster`.
    pub redis: Option<String>,
    /// How `rediss://` connections verify Redis (`--redis-ca`, `--redis-insecure`).
    pub redis_tls: RedisTls,
    pub server_id: String,
    pub shards: usize,
    /// The Redis reader and writer run on shard 0's loop (`--broker-threads inline`;
    /// the default with one shard). Single Redis only: Redis Cluster stays threaded.
    pub inline_broker: bool,
    pub limits: Limits,
    /// Path of the WebSocket echo endpoint (conformance testing); off when `None`.
    pub echo_path: Option<String>,
    pub slow_policy: SlowPolicy,
    /// Negotiate permessage-deflate on upgrades (`--compression on`).
    pub compression: bool,
    /// Server ping interval; a client silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// Time allowed to complete the HTTP request / WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Longest a SIGTERM shutdown may take.
    pub shutdown_timeout: Duration,
    /// Least time between two flushes of a shard's connections (0: flush every turn).
    pub flush_interval: Duration,
    /// Allowed `Origin` values of WebSocket upgrades; empty: any.
    pub allowed_origins: Vec<String>,
    /// Key required by the HTTP API (`/api/...`); `None`: open.
    pub api_key: Option<String>,
    /// Format of the log lines on stderr.
    pub log_format: LogFormat,
    /// Clients may publish over the WebSocket (`--client-publish`).
    pub client_publish: bool,
    /// Presence settings (`src/presence/`).
    pub presence: PresenceConfig,
    /// Connection authentication (JWT); `None`: off.
    pub jwt: Option<JwtConfig>,
    /// Channel namespaces: history and subscribe/publish rules per channel prefix.
    pub namespaces: Namespaces,
}

/// The same settings as read from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    redis: Option<String>,
    redis_cluster: Option<String>,
    redis_ca: Option<PathBuf>,
    redis_insecure: Option<bool>,
    server_id: Option<String>,
    shards: Option<usize>,
    broker_threads: Option<BrokerThreads>,
    max_message: Option<usize>,
    max_subscriptions: Option<usize>,
    max_channel_len: Option<usize>,
    outbound_limit: Option<usize>,
    max_conns_per_ip: Option<u32>,
    max_conns_per_user: Option<u32>,
    publish_rate: Option<u32>,
    echo_path: Option<String>,
    slow_consumer: Option<SlowPolicy>,
    compression: Option<OnOff>,
    ping_interval: Option<u64>,
    handshake_timeout: Option<u64>,
    shutdown_timeout: Option<u64>,
    flush_interval: Option<u64>,
    allowed_origins: Option<StringList>,
    api_key: Option<String>,
    log_format: Option<LogFormat>,
    client_publish: Option<OnOff>,
    presence: Option<OnOff>,
    presence_user_param: Option<bool>,
    presence_heartbeat: Option<u64>,
    presence_ttl: Option<u64>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    jwt_audience: Option<String>,
    history_size: Option<u64>,
    history_ttl: Option<u64>,
    /// The `[[namespace]]` tables.
    #[serde(default)]
    namespace: Vec<namespace::FileNamespace>,
}

impl Config {
    /// The node runs on Redis Cluster (sharded pub/sub), not one Redis.
    pub fn is_cluster(&self) -> bool {
        self.redis.as_deref().is_some_and(is_cluster_url)
    }

    /// Resolves flags, environment and file. `port_env` is the value of `PORT`.
    pub fn resolve(args: Args, port_env: Option<String>) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("bad config {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let presence = resolve_presence(&args, &file)?;
        let env_port = match port_env {
            Some(p) => Some(
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("PORT is not a port: {p:?}"))?,
            ),
            None => None,
        };
        let mut listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
        if let (None, Some(port)) = (args.listen, env_port) {
            listen.set_port(port);
        }
        let defaults = Limits::default();
        let limits = Limits {
            max_message: args
                .max_message
                .or(file.max_message)
                .unwrap_or(defaults.max_message),
            max_subscriptions: args
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(defaults.max_subscriptions),
            max_channel_len: args
                .max_channel_len
                .or(file.max_channel_len)
                .unwrap_or(defaults.max_channel_len),
            outbound_limit: args
                .outbound_limit
                .or(file.outbound_limit)
                .unwrap_or(defaults.outbound_limit),
            max_conns_per_ip: args
                .max_conns_per_ip
                .or(file.max_conns_per_ip)
                .unwrap_or(defaults.max_conns_per_ip),
            max_conns_per_user: args
                .max_conns_per_user
                .or(file.max_conns_per_user)
                .unwrap_or(defaults.max_conns_per_user),
            publish_rate: args
                .publish_rate
                .or(file.publish_rate)
                .unwrap_or(defaults.publish_rate),
            ..defaults
        };
        bounded("max-conns-per-ip", limits.max_conns_per_ip, PER_CLIENT, "")?;
        bounded(
            "publish-rate",
            limits.publish_rate,
            PER_CLIENT,
            "per second",
        )?;
        bounded("max-message", limits.max_message, MAX_MESSAGE, "bytes")?;
        bounded(
            "max-subscriptions",
            limits.max_subscriptions,
            MAX_SUBSCRIPTIONS,
            "",
        )?;
        bounded(
            "max-channel-len",
            limits.max_channel_len,
            MAX_CHANNEL_LEN,
            "bytes",
        )?;
        bounded(
            "outbound-limit",
            limits.outbound_limit,
            OUTBOUND_LIMIT,
            "bytes",
        )?;
        let shards = args.shards.or(file.shards).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(*SHARDS.end()))
                .unwrap_or(1)
        });
        bounded("shards", shards, SHARDS, "")?;
        let redis = args.redis.or(file.redis).filter(|r| !r.is_empty());
        let cluster = args
            .redis_cluster
            .or(file.redis_cluster)
            .filter(|r| !r.is_empty());
        let redis = match (redis, cluster) {
            (Some(_), Some(_)) => {
                return Err("--redis and --redis-cluster exclude each other: give one".into())
            }
            (None, Some(seeds)) if seeds.contains("://") => Some(seeds),
            (None, Some(seeds)) => Some(format!("redis+cluster://{seeds}")),
            (redis, None) => redis,
        };
        let redis_tls = redis_tls::resolve(
            redis.as_deref(),
            args.redis_ca.or(file.redis_ca),
            args.redis_insecure || file.redis_insecure.unwrap_or(false),
        )?;
        let server_id = args
            .server_id
            .or(file.server_id)
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let secs = |flag: Option<u64>, file: Option<u64>, default: u64, name: &str| {
            let v = flag.or(file).unwrap_or(default);
            bounded(name, v, SECONDS, "seconds").map(Duration::from_secs)
        };
        let ping_interval = secs(args.ping_interval, file.ping_interval, 25, "ping-interval")?;
        let handshake_timeout = secs(
            args.handshake_timeout,
            file.handshake_timeout,
            10,
            "handshake-timeout",
        )?;
        let shutdown_timeout = secs(
            args.shutdown_timeout,
            file.shutdown_timeout,
            5,
            "shutdown-timeout",
        )?;
        let flush_us = args
            .flush_interval
            .or(file.flush_interval)
            .unwrap_or(10_000);
        bounded("flush-interval", flush_us, FLUSH_MICROS, "microseconds")?;
        let allowed_origins = match (args.allowed_origins, file.allowed_origins) {
            (Some(list), _) => parse_origins([list.as_str()]),
            (None, Some(StringList(items))) => parse_origins(items.iter().map(String::as_str)),
            (None, None) => Vec::new(),
        };
        let api_key = args.api_key.or(file.api_key).filter(|k| !k.is_empty());
        let jwt = jwt::resolve(
            args.jwt_secret.or(file.jwt_secret),
            args.jwt_public_key.or(file.jwt_public_key),
            args.jwt_audience.or(file.jwt_audience),
        )?;
        let namespaces = namespace::resolve(
            args.history_size.or(file.history_size),
            args.history_ttl.or(file.history_ttl),
            &file.namespace,
            jwt.is_some(),
            limits.max_channel_len,
        )?;
        // Threads of their own by default, with any number of shards: on a quiet host
        // inline measured within noise of them (s2 0.93–0.97× per CPU, p99 higher in 6 of 8
        // pairs; s1 1.01×), and on a shared core its tail was far worse (docs/benchmarks.md,
        // "Reader and writer on the shard's loop").
        let inline_broker =
            args.broker_threads.or(file.broker_threads) == Some(BrokerThreads::Inline);
        Ok(Config {
            listen,
            redis,
            redis_tls,
            server_id,
            shards,
            inline_broker,
            limits,
            echo_path: args.echo_path.or(file.echo_path),
            slow_policy: args
                .slow_consumer
                .or(file.slow_consumer)
                .unwrap_or_default(),
            compression: args.compression.or(file.compression) == Some(OnOff::On),
            ping_interval,
            handshake_timeout,
            shutdown_timeout,
            flush_interval: Duration::from_micros(flush_us),
            allowed_origins,
            api_key,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            client_publish: args.client_publish.or(file.client_publish) != Some(OnOff::Off),
            presence,
            jwt,
            namespaces,
        })
    }
}

/// Splits comma lists of origins (a flag's one string, or each item of a TOML array);
/// `*` (or an empty list) means any.
fn parse_origins<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let origins: Vec<String> = lists
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.iter().any(|o| o == "*") {
        Vec::new()
    } else {
        origins
    }
}

/// The machine's host name, or "fanout" when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fanout".to_string())
}

/// How long to wait between Redis reconnect attempts: capped exponential backoff.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempt.min(6));
    Duration::from_millis(ms.min(5_000))
}

#[cfg(test)]
mod namespace_tests;
#[cfg(test)]
mod tests;

/// A `redis+cluster://` or `rediss+cluster://` URL.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
}
