//! `Ctx`, what every part of a shard reads: its id, the configuration, the counters,
//! the health flags, the broker's queue, the coarse clock and the shutdown deadline.
//! Written only by the loop (the clock, the deadline); it holds no connection or channel
//! state and never does I/O but handing a command to the broker's queue.

use std::sync::Arc;
use std::time::Instant;

use super::clock::Clock;
use crate::config::Config;
use crate::health::Health;
use crate::ids::ShardId;
use crate::metrics::Metrics;
use crate::msg::BrokerHandle;

/// What every part of a shard reads: who it is, the configuration, the counters, the
/// broker's queue, the coarse clock, and whether it is shutting down.
pub struct Ctx {
    pub id: ShardId,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub broker: BrokerHandle,
    /// The coarse clock of timeouts and the once-a-second tick.
    pub clock: Clock,
    pub shutdown_deadline: Option<Instant>,
}

impl Ctx {
    /// This shard's counters.
    pub fn m(&self) -> &crate::metrics::ShardMetrics {
        &self.metrics.shards[self.id.index()]
    }

    /// Whether `channel` keeps history (its namespace's `history_size`).
    pub fn has_history(&self, channel: &str) -> bool {
        self.config.namespaces.lookup(channel).history_size > 0
    }

    /// Why `channel` cannot be used here, if it cannot: a history channel whose name has
    /// a `}` but no hash tag cannot keep its keys in its own Redis Cluster slot
    /// (`broker::redis::history::cluster_safe`), so in a cluster it is refused rather
    /// than failing every publish.
    pub fn unplaceable(&self, channel: &str) -> Option<&'static str> {
        (self.config.is_cluster()
            && self.has_history(channel)
            && !crate::broker::redis::history::cluster_safe(channel))
        .then_some("a history channel name with a '}' needs a hash tag ({...}) in Redis Cluster")
    }

    /// Asks the broker for a history read; false if it cannot take it now.
    pub fn ask(&self, read: crate::msg::HistoryRead) -> bool {
        let cmd = crate::msg::BrokerCmd::History(Box::new(read));
        self.broker.send(cmd).is_ok()
    }

    pub fn http_context(&self) -> crate::http::HttpContext<'_> {
        crate::http::HttpContext {
            config: &self.config,
            metrics: &self.metrics,
            health: &self.health,
        }
    }
}
