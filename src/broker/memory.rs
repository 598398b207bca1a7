//! The embedded in-process bus (no Redis): one thread that takes the same `BrokerCmd`s as
//! the Redis broker and dispatches through the same `Router`, so embedded mode exercises
//! exactly the cluster-mode delivery path minus the network. History lives here in
//! memory (`MemoryHistory`), with the Redis scripts' semantics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::history::{answer, MemoryHistory};
use super::router::Wire;
use super::{BrokerCmd, Router, ShardLinks};
use crate::config::Config;
use crate::protocol::channel::CONTROL_CHANNEL;
use crate::protocol::envelope::EnvelopeBuilder;

/// Capacity of the bus queue; a full queue answers publishers with `unavailable`.
/// See `config::Tuning`.
pub const QUEUE: usize = crate::config::TUNING.broker_queue;

/// Starts the bus thread. It ends when every sender is dropped.
pub fn spawn(
    rx: Receiver<BrokerCmd>,
    links: ShardLinks,
    config: Arc<Config>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fanout-bus".into())
        .spawn(move || {
            let bus = Bus {
                router: Router::new(links.metrics.clone()),
                links,
                config,
                history: MemoryHistory::default(),
                envelope: EnvelopeBuilder::default(),
            };
            bus.run(rx)
        })
}

struct Bus {
    router: Router,
    links: ShardLinks,
    config: Arc<Config>,
    history: MemoryHistory,
    /// Builds the frames of history answers.
    envelope: EnvelopeBuilder,
}

/// Unix time in milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Bus {
    fn run(mut self, rx: Receiver<BrokerCmd>) {
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(cmd) => {
                    self.handle(cmd);
                    while let Ok(cmd) = rx.try_recv() {
                        self.handle(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let Bus { router, links, .. } = &mut self;
            router.send_owed_gaps(links);
            router.wake(links);
            links
                .metrics
                .channels
                .store(router.channels() as u64, Ordering::Relaxed);
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + Duration::from_secs(1);
                let namespaces = &self.config.namespaces;
                self.history
                    .sweep(|c| namespaces.lookup(c).history_ttl_secs, unix_ms());
            }
        }
    }

    fn handle(&mut self, cmd: BrokerCmd) {
        let Bus {
            router,
            links,
            config,
            history,
            envelope,
        } = self;
        handle(router, links, config, history, envelope, cmd)
    }
}

fn handle(
    router: &mut Router,
    links: &mut ShardLinks,
    config: &Config,
    history: &mut MemoryHistory,
    envelope: &mut EnvelopeBuilder,
    cmd: BrokerCmd,
) {
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
                let ns = config.namespaces.lookup(&channel);
                let offset = (ns.history_size > 0)
                    .then(|| history.append(&channel, ns, payload.clone(), unix_ms()));
                router.dispatch(links, &channel, &payload, Some(true), offset);
                if let Some(ack) = ack {
                    links.ack(ack, Ok(offset));
                }
                return;
            }
            if let Some(ack) = ack {
                links.ack(ack, Ok(None));
            }
        }
        BrokerCmd::History(read) => {
            let ns = config.namespaces.lookup(&read.channel);
            let found = history.read(&read, ns, unix_ms());
            answer(links, envelope, *read, Ok(found));
        }
    }
}
