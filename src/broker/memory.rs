//! The embedded in-process bus (no Redis): one thread that takes the same `BrokerCmd`s as
//! the Redis broker and dispatches through the same `Router`, so embedded mode exercises
//! exactly the cluster-mode delivery path minus the network.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use super::router::Wire;
use super::{BrokerCmd, Router, ShardLinks};
use crate::protocol::control::CONTROL_CHANNEL;

/// Capacity of the bus queue; a full queue answers publishers with `unavailable`.
/// See `config::Tuning`.
pub const QUEUE: usize = crate::config::TUNING.broker_queue;

/// Starts the bus thread. It ends when every sender is dropped.
pub fn spawn(rx: Receiver<BrokerCmd>, links: ShardLinks) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fanout-bus".into())
        .spawn(move || run(rx, Router::new(links.metrics.clone()), links))
}

fn run(rx: Receiver<BrokerCmd>, mut router: Router, mut links: ShardLinks) {
    while let Ok(cmd) = rx.recv() {
        handle(&mut router, &mut links, cmd);
        while let Ok(cmd) = rx.try_recv() {
            handle(&mut router, &mut links, cmd);
        }
        router.send_owed_gaps(&mut links);
        router.wake(&mut links);
        links
            .metrics
            .channels
            .store(router.channels() as u64, Ordering::Relaxed);
    }
}

fn handle(router: &mut Router, links: &mut ShardLinks, cmd: BrokerCmd) {
    match cmd {
        BrokerCmd::Subscribe {
            channel,
            shard,
            epoch,
        } => {
            let name = channel.clone();
            if router.subscribe(links, channel, shard, epoch) == Wire::Subscribe {
                router.confirmed(links, &name);
            }
        }
        BrokerCmd::Unsubscribe { channel, shard } => {
            router.unsubscribe(&channel, shard);
        }
        BrokerCmd::Publish {
            channel,
            payload,
            ack,
        } => {
            if &*channel == CONTROL_CHANNEL {
                // Embedded mode: the control channel is this one bus.
                links.control_message(&payload);
            } else {
                router.dispatch(links, &channel, &payload, Some(true));
            }
            if let Some(ack) = ack {
                links.ack(ack, Ok(()));
            }
        }
    }
}
