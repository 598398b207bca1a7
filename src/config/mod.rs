//! Configuration: command-line flags, environment variables and an optional TOML file,
//! resolved once at start into `Config`. Every limit lives in `Limits`, in one place.
//! Precedence: flag > environment variable > `--config` file > built-in default.

mod presence;

use presence::resolve_presence;
pub use presence::{OnOff, PresenceConfig};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
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
        }
    }
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

/// The resolved configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: the embedded in-process bus.
    pub redis: Option<String>,
    pub server_id: String,
    pub shards: usize,
    pub limits: Limits,
    /// Path of the WebSocket echo endpoint (conformance testing); off when `None`.
    pub echo_path: Option<String>,
    pub slow_policy: SlowPolicy,
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
    /// Presence settings (`src/presence/`).
    pub presence: PresenceConfig,
}

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

    /// Redis URL (redis://[:password@]host:port[/db]); join the cluster through it [default: none, embedded in-process bus]
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// This node's name in presence and logs [default: <hostname>-<pid>]
    #[arg(long, env = "SERVER_ID", value_name = "ID")]
    pub server_id: Option<String>,

    /// Event-loop threads [default: number of cores]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Largest client message in bytes; larger ones get a too_large error [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,

    /// Subscriptions one connection may hold [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Longest channel name in bytes [default: 256]
    #[arg(long, value_name = "BYTES")]
    pub max_channel_len: Option<usize>,

    /// Bytes queued for one slow connection before the slow-consumer policy applies [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub outbound_limit: Option<usize>,

    /// What to do with a slow consumer: close it (code 4000) or drop its oldest frames [default: close]
    #[arg(long, value_enum, value_name = "POLICY")]
    pub slow_consumer: Option<SlowPolicy>,

    /// Seconds between server pings; a client silent for two intervals is dropped [default: 25]
    #[arg(long, value_name = "SECS")]
    pub ping_interval: Option<u64>,

    /// Seconds a client has to complete its handshake (or HTTP request) [default: 10]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<u64>,

    /// Seconds a SIGTERM/SIGINT shutdown may take before the node exits anyway [default: 5]
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// Pacing of a shard's flushes under high per-connection message rates: while connections
    /// get two or more messages per flush, flush at most once per this many microseconds, so each
    /// write carries every frame of the interval (0: never pace) [default: 10000]
    #[arg(long, value_name = "MICROS")]
    pub flush_interval: Option<u64>,

    /// Serve a WebSocket echo endpoint on this path, for conformance tests (Autobahn) [default: off]
    #[arg(long, value_name = "PATH")]
    pub echo_path: Option<String>,

    /// Comma list of allowed Origin values for WebSocket upgrades (others get 403; requests without Origin are allowed) [default: any]
    #[arg(long, env = "ALLOWED_ORIGINS", value_name = "LIST")]
    pub allowed_origins: Option<String>,

    /// Key required by the HTTP API (Authorization: Bearer KEY or X-Api-Key: KEY) [default: none, API open]
    #[arg(long, env = "API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Presence (connection manager): in Redis with --redis, in-process otherwise [default: on]
    #[arg(long, value_name = "on|off")]
    pub presence: Option<OnOff>,

    /// Take the presence user id from the `user` query parameter of the upgrade URL (?user=U) instead of the connection id [default: off]
    #[arg(long)]
    pub presence_user_param: bool,

    /// Seconds between presence heartbeats (one pipelined round per node); the node's liveness key lives 3 intervals [default: 30]
    #[arg(long, value_name = "SECS")]
    pub presence_heartbeat: Option<u64>,

    /// TTL in seconds of each connections:{user} hash, refreshed by heartbeats [default: 120]
    #[arg(long, value_name = "SECS")]
    pub presence_ttl: Option<u64>,

    /// TOML file with any of the settings above
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The same settings as read from a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    redis: Option<String>,
    server_id: Option<String>,
    shards: Option<usize>,
    max_message: Option<usize>,
    max_subscriptions: Option<usize>,
    max_channel_len: Option<usize>,
    outbound_limit: Option<usize>,
    echo_path: Option<String>,
    slow_consumer: Option<SlowPolicy>,
    ping_interval: Option<u64>,
    handshake_timeout: Option<u64>,
    shutdown_timeout: Option<u64>,
    flush_interval: Option<u64>,
    allowed_origins: Option<String>,
    api_key: Option<String>,
    presence: Option<OnOff>,
    presence_user_param: Option<bool>,
    presence_heartbeat: Option<u64>,
    presence_ttl: Option<u64>,
}

impl Config {
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
            ..defaults
        };
        if limits.max_message == 0 || limits.max_message > 16 * 1024 * 1024 {
            return Err("--max-message must be between 1 and 16777216".into());
        }
        if limits.max_channel_len == 0 {
            return Err("--max-channel-len must be at least 1".into());
        }
        if limits.outbound_limit < 1024 {
            return Err("--outbound-limit must be at least 1024".into());
        }
        let shards = args.shards.or(file.shards).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if shards == 0 || shards > 64 {
            return Err("--shards must be between 1 and 64".into());
        }
        let redis = args.redis.or(file.redis).filter(|r| !r.is_empty());
        let server_id = args
            .server_id
            .or(file.server_id)
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let secs = |flag: Option<u64>,
                    file: Option<u64>,
                    default: u64,
                    name: &str|
         -> Result<Duration, String> {
            let v = flag.or(file).unwrap_or(default);
            if v == 0 || v > 86_400 {
                return Err(format!("--{name} must be between 1 and 86400 seconds"));
            }
            Ok(Duration::from_secs(v))
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
        if flush_us > 100_000 {
            return Err("--flush-interval must be at most 100000 microseconds".into());
        }
        let allowed_origins = args
            .allowed_origins
            .or(file.allowed_origins)
            .map(|list| parse_origins(&list))
            .unwrap_or_default();
        let api_key = args.api_key.or(file.api_key).filter(|k| !k.is_empty());
        Ok(Config {
            listen,
            redis,
            server_id,
            shards,
            limits,
            echo_path: args.echo_path.or(file.echo_path),
            slow_policy: args
                .slow_consumer
                .or(file.slow_consumer)
                .unwrap_or_default(),
            ping_interval,
            handshake_timeout,
            shutdown_timeout,
            flush_interval: Duration::from_micros(flush_us),
            allowed_origins,
            api_key,
            presence,
        })
    }
}

/// Splits a comma list of origins; `*` (or an empty list) means any.
fn parse_origins(list: &str) -> Vec<String> {
    let origins: Vec<String> = list
        .split(',')
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
mod tests {
    use super::*;

    #[test]
    fn defaults_and_port_env() {
        let c = Config::resolve(Args::default(), None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert!(c.redis.is_none());
        assert_eq!(c.limits, Limits::default());
        let c = Config::resolve(Args::default(), Some("4000".into())).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
        assert!(Config::resolve(Args::default(), Some("x".into())).is_err());
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("fanout-cfg-{}", std::process::id()));
        std::fs::write(&dir, "max_message = 1000\nshards = 3\n").unwrap();
        let args = Args {
            config: Some(dir.clone()),
            shards: Some(2),
            ..Args::default()
        };
        let c = Config::resolve(args, None).unwrap();
        assert_eq!(c.limits.max_message, 1000);
        assert_eq!(c.shards, 2);
        std::fs::write(&dir, "nonsense = 1\n").unwrap();
        let args = Args {
            config: Some(dir.clone()),
            ..Args::default()
        };
        assert!(Config::resolve(args, None).is_err());
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn rejects_bad_limits() {
        let bad = Args {
            shards: Some(0),
            ..Args::default()
        };
        assert!(Config::resolve(bad, None).is_err());
        let bad = Args {
            max_message: Some(0),
            ..Args::default()
        };
        assert!(Config::resolve(bad, None).is_err());
    }

    #[test]
    fn origins_api_key_and_presence() {
        let args = Args {
            allowed_origins: Some(" https://A.example/ ,https://b.example".into()),
            api_key: Some(String::new()),
            presence: Some(OnOff::Off),
            presence_heartbeat: Some(2),
            presence_ttl: Some(10),
            ..Args::default()
        };
        let c = Config::resolve(args, None).unwrap();
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.api_key, None);
        assert!(!c.presence.enabled);
        assert_eq!(c.presence.heartbeat, Duration::from_secs(2));
        let any = Args {
            allowed_origins: Some("*".into()),
            ..Args::default()
        };
        assert!(Config::resolve(any, None)
            .unwrap()
            .allowed_origins
            .is_empty());
        let bad = Args {
            presence_heartbeat: Some(200),
            ..Args::default()
        };
        assert!(Config::resolve(bad, None).is_err());
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_millis(5000));
    }
}
