//! The broker side of a node: what shards ask of it (`BrokerCmd`), what it tells shards
//! (`ShardMsg`), and the `Router` that both buses share: the node-wide channel → shards
//! table, reference counted per shard, and the dispatch of one shared frame to every
//! interested shard; the nodes' control channel (`protocol::control`) fanned out to
//! every shard. The router never blocks: a full shard queue drops and counts.

pub mod cluster;
pub mod history;
pub mod memory;
pub mod redis;
pub mod router;

use std::sync::Arc;

use crate::inbox::InboxSender;
use crate::metrics::Metrics;
use crate::protocol::control::Control;
use crate::protocol::ErrorCode;

pub use crate::ids::ShardId;
pub use crate::msg::{AckTo, BrokerCmd, BrokerHandle, ShardMsg};
pub use router::Router;

/// The queues of every shard, as seen from a broker thread.
#[derive(Clone)]
pub struct ShardLinks {
    /// Deliveries (bounded: a full queue drops and counts).
    pub data: Vec<InboxSender<ShardMsg>>,
    /// Control messages (unbounded, low volume).
    pub control: Vec<InboxSender<ShardMsg>>,
    pub metrics: Arc<Metrics>,
}

impl ShardLinks {
    /// Sends a control message to one shard.
    pub fn control(&self, shard: ShardId, msg: ShardMsg) {
        if let Some(tx) = self.control.get(shard.index()) {
            let _ = tx.send(msg);
        }
    }

    /// Carries out a payload of the nodes' control channel (`protocol::control`): a
    /// disconnect goes to every shard. Anything else is ignored.
    pub fn control_message(&self, payload: &[u8]) {
        match crate::protocol::control::decode(payload) {
            Some(Control::Disconnect(user)) => {
                let user: Arc<str> = user.into();
                for tx in &self.control {
                    let _ = tx.send(ShardMsg::Disconnect { user: user.clone() });
                }
            }
            None => tracing::debug!("ignored a malformed control message"),
        }
    }

    /// Reports the outcome of a publish to the connection that asked for it.
    /// `Ok(Some(offset))`: the message went into a history channel at `offset`.
    pub fn ack(&self, ack: AckTo, result: Result<Option<crate::offset::Offset>, ErrorCode>) {
        let AckTo { shard, conn, id } = ack;
        self.control(shard, ShardMsg::Published { conn, id, result });
    }
}
