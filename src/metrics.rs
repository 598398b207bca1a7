//! Counters and gauges of one node, written with relaxed atomics by the thread that owns
//! each event (one writer per shard counter, so no contention), read by `/metrics`.
//! Every loss has exactly one named counter here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One exported per-shard series: name, type, field, help.
type ShardSeries = (
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> &AtomicU64,
    &'static str,
);

/// Per-shard figures, each written only by its shard.
#[derive(Default, Debug)]
pub struct ShardMetrics {
    pub connections: AtomicU64,
    pub subscriptions: AtomicU64,
    /// Client messages received (any command).
    pub messages_in: AtomicU64,
    /// Client publishes handed to the broker.
    pub publishes: AtomicU64,
    /// Delivery frames queued to clients.
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Messages compressed for permessage-deflate subscribers (once per message per
    /// shard, whatever the number of subscribers).
    pub compressed: AtomicU64,
    /// Connections closed by the slow-consumer policy.
    pub slow_consumer_closes: AtomicU64,
    /// Frames dropped by the drop-oldest slow-consumer policy.
    pub slow_consumer_dropped: AtomicU64,
    /// Publishes refused because the broker queue was full or the broker was down.
    pub publish_rejected: AtomicU64,
    /// Protocol errors answered to clients.
    pub client_errors: AtomicU64,
    /// WebSocket upgrades refused at admission (origin not allowed, bad user parameter,
    /// too many connections from one address).
    pub upgrades_refused: AtomicU64,
    /// Publishes refused by the per-connection publish rate (`--publish-rate`).
    pub rate_limited: AtomicU64,
    /// Connections dropped for a handshake timeout or for being silent too long.
    pub timeouts: AtomicU64,
    /// Depth of the shard's delivery queue, sampled each loop turn.
    pub queue_depth: AtomicU64,
    /// Broker frame built → queued to this shard's subscribers.
    pub deliver_latency: crate::latency::Histogram,
}

/// All figures of the node.
#[derive(Debug)]
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
    /// Channels with local subscribers (node-wide).
    pub channels: AtomicU64,
    /// Deliveries dropped because a shard queue was full.
    pub dispatch_dropped: AtomicU64,
    /// Broker messages for channels nobody here subscribes to (late after unsubscribe).
    pub unrouted: AtomicU64,
    /// Broker (Redis) connections re-established after a loss.
    pub broker_reconnects: AtomicU64,
    /// Wake-up syscalls of the Redis writer thread (a shard makes one per turn that
    /// queued publishes, not one per publish; none when the writer runs inline).
    pub writer_wakeups: Arc<AtomicU64>,
    /// Times a shard gave freed heap back to the OS after a burst of connections went
    /// idle (`malloc_trim`, at most once per 10 s).
    pub memory_trims: AtomicU64,
    /// Times Redis refused the node's credentials (AUTH/SELECT).
    pub redis_auth_refused: AtomicU64,
    /// Failed TLS handshakes with Redis.
    pub redis_tls_failed: AtomicU64,
    /// Client publishes that the broker reported as failed.
    pub publish_failed: AtomicU64,
    /// Gap notices sent to channels after a resubscribe.
    pub gaps: AtomicU64,
    /// Gap notices on history channels that a shard repaired from history instead.
    pub history_repairs: AtomicU64,
    /// `gap` told to clients of history channels: history no longer had what was
    /// missed (trimmed, expired, another epoch).
    pub history_gaps: AtomicU64,
    /// Broker messages dropped at the router: payload above --max-message.
    pub broker_too_large: AtomicU64,
    /// Redis Cluster: messages dropped because they came on a connection that no longer
    /// holds their channel (a demoted primary still receiving over the cluster bus).
    pub broker_stale_link: AtomicU64,
    /// Messages received from Redis.
    pub broker_messages: AtomicU64,
    /// Presence (connection manager) figures.
    pub presence: PresenceMetrics,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            channels: AtomicU64::new(0),
            dispatch_dropped: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            broker_reconnects: AtomicU64::new(0),
            writer_wakeups: Arc::default(),
            memory_trims: AtomicU64::new(0),
            redis_auth_refused: AtomicU64::new(0),
            redis_tls_failed: AtomicU64::new(0),
            publish_failed: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            history_repairs: AtomicU64::new(0),
            history_gaps: AtomicU64::new(0),
            broker_too_large: AtomicU64::new(0),
            broker_stale_link: AtomicU64::new(0),
            broker_messages: AtomicU64::new(0),
            presence: Default::default(),
        }
    }

    /// Sum of one per-shard figure.
    pub fn total(&self, pick: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| pick(s).load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let per_shard: [ShardSeries; 15] = [
            (
                "fanout_connections",
                "gauge",
                |s| &s.connections,
                "Open client connections",
            ),
            (
                "fanout_subscriptions",
                "gauge",
                |s| &s.subscriptions,
                "Client subscriptions",
            ),
            (
                "fanout_messages_in_total",
                "counter",
                |s| &s.messages_in,
                "Client messages received",
            ),
            (
                "fanout_publishes_total",
                "counter",
                |s| &s.publishes,
                "Client publishes handed to the broker",
            ),
            (
                "fanout_messages_out_total",
                "counter",
                |s| &s.messages_out,
                "Delivery frames queued to clients",
            ),
            (
                "fanout_bytes_out_total",
                "counter",
                |s| &s.bytes_out,
                "Bytes written to clients",
            ),
            (
                "fanout_messages_compressed_total",
                "counter",
                |s| &s.compressed,
                "Delivery messages compressed (permessage-deflate), once per shard",
            ),
            (
                "fanout_slow_consumer_closes_total",
                "counter",
                |s| &s.slow_consumer_closes,
                "Connections closed as slow consumers",
            ),
            (
                "fanout_slow_consumer_dropped_total",
                "counter",
                |s| &s.slow_consumer_dropped,
                "Frames dropped for slow consumers",
            ),
            (
                "fanout_publish_rejected_total",
                "counter",
                |s| &s.publish_rejected,
                "Publishes refused (broker queue full or down)",
            ),
            (
                "fanout_client_errors_total",
                "counter",
                |s| &s.client_errors,
                "Error replies sent to clients",
            ),
            (
                "fanout_upgrades_refused_total",
                "counter",
                |s| &s.upgrades_refused,
                "WebSocket upgrades refused (origin not allowed, bad user parameter, too many connections from one address)",
            ),
            (
                "fanout_publish_rate_limited_total",
                "counter",
                |s| &s.rate_limited,
                "Publishes refused by the per-connection publish rate",
            ),
            (
                "fanout_timeouts_total",
                "counter",
                |s| &s.timeouts,
                "Connections dropped by handshake or keepalive timeouts",
            ),
            (
                "fanout_dispatch_queue_depth",
                "gauge",
                |s| &s.queue_depth,
                "Deliveries waiting in the shard queue",
            ),
        ];
        for (name, kind, pick, help) in per_shard {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{i}\"}} {}",
                    pick(s).load(Ordering::Relaxed)
                );
            }
        }
        let node: [(&str, &str, &AtomicU64, &str); 15] = [
            (
                "fanout_channels",
                "gauge",
                &self.channels,
                "Channels with local subscribers",
            ),
            (
                "fanout_dispatch_dropped_total",
                "counter",
                &self.dispatch_dropped,
                "Deliveries dropped: shard queue full",
            ),
            (
                "fanout_unrouted_total",
                "counter",
                &self.unrouted,
                "Broker messages with no local subscriber",
            ),
            (
                "fanout_broker_reconnects_total",
                "counter",
                &self.broker_reconnects,
                "Redis reconnections",
            ),
            (
                "fanout_broker_writer_wakeups_total",
                "counter",
                &*self.writer_wakeups,
                "Wake-ups of the Redis writer thread (one per shard turn, not per publish)",
            ),
            (
                "fanout_memory_trims_total",
                "counter",
                &self.memory_trims,
                "Freed heap given back to the OS after a burst of connections went idle",
            ),
            (
                "fanout_redis_auth_refused_total",
                "counter",
                &self.redis_auth_refused,
                "Times Redis refused the node's credentials (AUTH/SELECT)",
            ),
            (
                "fanout_redis_tls_failed_total",
                "counter",
                &self.redis_tls_failed,
                "Failed TLS handshakes with Redis (certificate, CA, host name)",
            ),
            (
                "fanout_publish_failed_total",
                "counter",
                &self.publish_failed,
                "Publishes that failed in the broker",
            ),
            (
                "fanout_gaps_total",
                "counter",
                &self.gaps,
                "Gap notices sent to shards (after a reconnect, a dropped delivery or an oversized message), one per shard per channel",
            ),
            (
                "fanout_history_repairs_total",
                "counter",
                &self.history_repairs,
                "Gap notices on history channels repaired from history (clients saw no gap)",
            ),
            (
                "fanout_history_gaps_total",
                "counter",
                &self.history_gaps,
                "Gaps told to clients of history channels: history no longer had what was missed",
            ),
            (
                "fanout_broker_message_too_large_total",
                "counter",
                &self.broker_too_large,
                "Redis messages dropped: payload above --max-message",
            ),
            (
                "fanout_broker_stale_link_total",
                "counter",
                &self.broker_stale_link,
                "Redis Cluster messages dropped: they came on a connection that no longer holds their channel (a demoted primary); the channel's new connection delivers them",
            ),
            (
                "fanout_broker_messages_total",
                "counter",
                &self.broker_messages,
                "Messages received from Redis",
            ),
        ];
        for (name, kind, value, help) in node {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        self.render_extra(&mut out);
        out
    }

    /// The publish→send latency histograms and the presence figures.
    fn render_extra(&self, out: &mut String) {
        let name = "fanout_publish_to_send_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Broker frame built to queued for subscribers, per shard\n# TYPE {name} histogram"
        );
        for (i, s) in self.shards.iter().enumerate() {
            s.deliver_latency
                .render(out, name, &format!("shard=\"{i}\""));
        }
        self.presence.render(out);
    }
}
/// Presence figures (written by the presence thread, except the shard-side drops).
#[derive(Debug, Default)]
pub struct PresenceMetrics {
    pub connections: AtomicU64,
    pub users: AtomicU64,
    pub updates: AtomicU64,
    pub queries: AtomicU64,
    /// Messages shards could not queue right away (kept in a shard backlog).
    pub deferred: AtomicU64,
    /// Connects never recorded and queries refused because the queue was full.
    pub dropped: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Duration of the last heartbeat round, in microseconds.
    pub heartbeat_us: AtomicU64,
    pub redis_rounds: AtomicU64,
    pub redis_commands: AtomicU64,
    pub redis_errors: AtomicU64,
    pub redis_up: AtomicU64,
    /// Entries of dead nodes (or own leftovers) removed.
    pub stale_removed: AtomicU64,
}

impl PresenceMetrics {
    pub fn render(&self, out: &mut String) {
        let series: [(&str, &str, &AtomicU64, &str); 12] = [
            (
                "fanout_presence_connections",
                "gauge",
                &self.connections,
                "Local connections recorded in presence",
            ),
            (
                "fanout_presence_users",
                "gauge",
                &self.users,
                "Distinct users with a local connection",
            ),
            (
                "fanout_presence_updates_total",
                "counter",
                &self.updates,
                "Presence connects and disconnects applied",
            ),
            (
                "fanout_presence_queries_total",
                "counter",
                &self.queries,
                "Presence queries answered",
            ),
            (
                "fanout_presence_deferred_total",
                "counter",
                &self.deferred,
                "Presence updates delayed: queue full, kept in a shard backlog",
            ),
            (
                "fanout_presence_dropped_total",
                "counter",
                &self.dropped,
                "Presence connects not recorded or queries refused: queue full",
            ),
            (
                "fanout_presence_heartbeats_total",
                "counter",
                &self.heartbeats,
                "Presence heartbeat rounds",
            ),
            (
                "fanout_presence_redis_rounds_total",
                "counter",
                &self.redis_rounds,
                "Pipelined presence round trips to Redis",
            ),
            (
                "fanout_presence_redis_commands_total",
                "counter",
                &self.redis_commands,
                "Presence commands sent to Redis",
            ),
            (
                "fanout_presence_redis_errors_total",
                "counter",
                &self.redis_errors,
                "Presence rounds that failed",
            ),
            (
                "fanout_presence_redis_up",
                "gauge",
                &self.redis_up,
                "1 when the last presence round succeeded",
            ),
            (
                "fanout_presence_stale_removed_total",
                "counter",
                &self.stale_removed,
                "Entries of dead nodes removed",
            ),
        ];
        for (name, kind, v, help) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let name = "fanout_presence_heartbeat_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of the last heartbeat round\n# TYPE {name} gauge\n{name} {}",
            self.heartbeat_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}
