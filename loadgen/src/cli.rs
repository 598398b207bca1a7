//! Command line: the `fanout`, `conns`, `churn` and `churn-deliveries` scenarios and their
//! flags (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    version,
    args_override_self = true,
    about = "Load generator for WebSocket pub/sub servers speaking fanout protocol v1",
    long_about = "Load generator for WebSocket pub/sub servers speaking fanout protocol v1.\n\
        Every scenario is bounded in time and count and stops by itself. See docs/loadgen.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Subscribers over channels, publishers at a fixed rate or open loop; measures
    /// deliveries/s, end-to-end latency, lost/duplicated/reordered messages.
    Fanout(FanoutArgs),
    /// Many idle subscribed connections; measures connect rate and server memory per
    /// connection.
    Conns(ConnsArgs),
    /// Connect/subscribe/disconnect storms; measures connects/s, subscribe latency and
    /// errors.
    Churn(ChurnArgs),
    /// Delivery under connection churn: subscribers that keep dropping and reconnecting
    /// (resubscribing with `since` under --resume) while publishers run; measures what
    /// each subscriber received: delivery ratio, duplicates, reorders, gaps.
    #[command(name = "churn-deliveries")]
    ChurnDeliveries(ChurnDeliveriesArgs),
}

/// Flags shared by every scenario.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// WebSocket URL(s) of the server under test (repeatable or comma list). With
    /// several, connection i goes to URL i % n and publisher k to URL k % n.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:3000/")]
    pub url: Vec<String>,
    /// Channel names are PREFIX.0, PREFIX.1, ...
    #[arg(long, default_value = "lg")]
    pub channel_prefix: String,
    /// Threads (each with its own epoll) per process for the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Processes to spread connections over (0 = auto: enough to stay under the
    /// open-file limit). Children report to the parent, which aggregates.
    #[arg(long, default_value_t = 0)]
    pub procs: usize,
    /// Spread connections over 127.0.0.1..=127.0.0.N source addresses (0 = auto: at
    /// most 5000 connections per source address and URL). Only used for loopback targets.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u32,
    /// Server process id(s) to account CPU and RSS for (repeatable or comma list; summed).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Print one machine-readable JSON line on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw the latency distribution to FILE (.svg, or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Seconds allowed for connecting and subscribing everything.
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// Connections in connect/handshake/subscribe at once, per process.
    #[arg(long, default_value_t = 256)]
    pub max_pending: usize,
    /// Internal: run as child I/N of a multi-process run.
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishVia {
    /// WebSocket `publish` frames (with `id` acks) through the server.
    Ws,
    /// `PUBLISH` straight into Redis.
    Redis,
    /// HTTP/1.1 `POST` of the payload to `--pub-url` (one keep-alive connection per
    /// publisher; Nchan's publisher location). `fanout` only.
    Http,
}

impl PublishVia {
    pub fn name(self) -> &'static str {
        match self {
            PublishVia::Ws => "ws",
            PublishVia::Redis => "redis",
            PublishVia::Http => "http",
        }
    }
}

/// `--payload-kind`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Pad,
    Json,
}

impl Common {
    /// The URLs as one string (comma separated), for reports and messages.
    pub fn url_list(&self) -> String {
        self.url.join(",")
    }
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber connections in total.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Channels; subscribers and publishers are spread round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// Channels each subscriber connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub subs_per_conn: u32,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    pub pubs: u32,
    /// Publish through the server (ws), straight into Redis (redis) or by HTTP POST to
    /// --pub-url (http).
    #[arg(long, value_enum, default_value_t = PublishVia::Ws)]
    pub publish_via: PublishVia,
    /// Redis URL for --publish-via redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// URL template(s) for --publish-via http, `{channel}` replaced by the channel name,
    /// e.g. `http://127.0.0.1:8080/pub/{channel}` (repeatable or comma list; publisher k
    /// uses URL k % n).
    #[arg(long, value_delimiter = ',')]
    pub pub_url: Vec<String>,
    /// Subscribers connect to `<url host><TEMPLATE>` with `{channel}` replaced by their
    /// channel (e.g. `/sub/{channel}`, Nchan) and send no subscribe message; every text
    /// frame is then the raw published payload (no `{"channel","data"}` envelope).
    /// Needs --subs-per-conn 1.
    #[arg(long, value_name = "TEMPLATE")]
    pub sub_path: Option<String>,
    /// Payload size in bytes (the `data` JSON).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// What pads the payload to --payload bytes: one repeated byte (pad), or realistic
    /// JSON records (json: compresses like real data, for --compression runs).
    #[arg(long, value_enum, default_value_t = PayloadKind::Pad)]
    pub payload_kind: PayloadKind,
    /// Subscribers offer permessage-deflate (RFC 7692) and inflate compressed
    /// deliveries; the report adds the bytes received on the wire per delivery.
    #[arg(long)]
    pub compression: bool,
    /// Total publishes per second over all publishers (0 = open loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Outstanding (unacknowledged) publishes per publisher (0 = unbounded, for servers
    /// that do not acknowledge publishes with an id).
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for in-flight deliveries after publishing stops.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (each subscribes).
    #[arg(long, default_value_t = 20_000)]
    pub conns: usize,
    /// Channels, spread round-robin.
    #[arg(long, default_value_t = 1000)]
    pub channels: u32,
    /// Channels each connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub subs_per_conn: u32,
    /// Seconds to hold the connections open after all subscribed.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Send a close frame and wait (bounded) for the server's.
    Clean,
    /// Drop the TCP connection (RST) without a close frame.
    Abort,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Stop after this many connection cycles in total (0 = only --duration bounds it).
    #[arg(long, default_value_t = 0)]
    pub conns: u64,
    /// New connections per second in total (0 = as fast as --concurrency allows).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Connection cycles in flight at once, in total.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// Seconds to keep starting new cycles.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Channels, spread round-robin.
    #[arg(long, default_value_t = 100)]
    pub channels: u32,
    /// Milliseconds to stay subscribed before disconnecting.
    #[arg(long, default_value_t = 0)]
    pub hold_ms: u64,
    /// How to disconnect.
    #[arg(long, value_enum, default_value_t = CloseMode::Clean)]
    pub close: CloseMode,
    /// Seconds one cycle may take before it counts as a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Not a `churn` flag: delivery under churn with resume is `churn-deliveries --resume`
    /// (refused here with that hint).
    #[arg(long, hide = true)]
    pub resume: bool,
}

/// A duration in seconds, fixed (`2`) or drawn uniformly from a range (`0.5..2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecsRange {
    pub min: f64,
    pub max: f64,
}

/// Parse `S` or `MIN..MAX` (seconds, 0 ≤ MIN ≤ MAX ≤ 3600).
pub fn parse_secs_range(s: &str) -> Result<SecsRange, String> {
    let num = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|_| format!("'{x}' is not a number of seconds"))
    };
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let v = num(s)?;
            (v, v)
        }
    };
    if !(0.0..=3600.0).contains(&min) || !(min..=3600.0).contains(&max) {
        return Err(format!("'{s}': need 0 <= MIN <= MAX <= 3600"));
    }
    Ok(SecsRange { min, max })
}

#[derive(Args, Debug, Clone)]
pub struct ChurnDeliveriesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscriber connections in total (each one keeps dropping and reconnecting).
    #[arg(long, default_value_t = 200)]
    pub subs: usize,
    /// Channels; subscribers and publishers are spread round-robin over them.
    #[arg(long, default_value_t = 20)]
    pub channels: u32,
    /// Channels each subscriber connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub subs_per_conn: u32,
    /// Publisher connections (never dropped).
    #[arg(long, default_value_t = 1)]
    pub pubs: u32,
    /// Publish through the server (ws) or straight into Redis (redis; a raw PUBLISH
    /// bypasses the server's history, so not with --resume).
    #[arg(long, value_enum, default_value_t = PublishVia::Ws)]
    pub publish_via: PublishVia,
    /// Redis URL for --publish-via redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Payload size in bytes (the `data` JSON).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Total publishes per second over all publishers (> 0).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Outstanding (unacknowledged) publishes per publisher (0 = unbounded).
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Seconds of publishing (subscribers drop and reconnect only during this time).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Mean seconds between two drops of one subscriber (drop to drop, offline time
    /// included); each interval is drawn uniformly from 50%..150% of it.
    #[arg(long, default_value_t = 15.0)]
    pub drop_every: f64,
    /// Seconds a dropped subscriber stays away before reconnecting: `S` or `MIN..MAX`
    /// (drawn uniformly).
    #[arg(long, default_value = "2", value_parser = parse_secs_range)]
    pub offline: SecsRange,
    /// Resubscribe with `since` = the last offset seen on each channel (servers with
    /// history); without it a reconnect is a plain subscribe.
    #[arg(long)]
    pub resume: bool,
    /// Seconds to wait after publishing stops for offline subscribers to come back and
    /// catch up (0 = auto: the longest offline time + 3 s). Ends early once every
    /// subscriber has every message.
    #[arg(long, default_value_t = 0.0)]
    pub drain: f64,
    /// Seed of the drop schedule (same seed, same schedule).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Subscribers with loss, duplicates or reorders listed in detail (with their event
    /// log) in the report, worst first.
    #[arg(long, default_value_t = 10)]
    pub report_subs: usize,
}
