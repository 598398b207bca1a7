//! Starts a node: binds the listener, starts the broker threads (Redis reader and writer,
//! or the in-process bus; with `--broker-threads inline` the reader and writer go to
//! shard 0's loop instead) and the shards, and returns a handle that shuts them down and
//! joins them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::broker::{self, ShardLinks};
use crate::config::Config;
use crate::inbox::{inbox, InboxSender};
use crate::metrics::Metrics;
use crate::msg::{BrokerHandle, ShardMsg};
use crate::shard::{Shard, ShardSetup, WAKER};

use crate::health::Health;

/// See `config::Tuning`.
pub const SHARD_QUEUE: usize = crate::config::TUNING.shard_queue;

/// Capacity of each shard's delivery queue: `SHARD_QUEUE`, or `FANOUT_TEST_SHARD_QUEUE`
/// (a test knob, so a test can overflow it with a small burst and watch the repair).
fn shard_queue() -> usize {
    std::env::var("FANOUT_TEST_SHARD_QUEUE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SHARD_QUEUE)
}

/// See `config::Tuning`.
pub const LISTEN_BACKLOG: i32 = crate::config::TUNING.listen_backlog;

/// Stops the broker threads.
type StopFn = Box<dyn FnOnce() + Send>;

/// A running node.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    control: Vec<InboxSender<ShardMsg>>,
    shards: Vec<JoinHandle<()>>,
    broker: Vec<JoinHandle<()>>,
    broker_stop: Option<StopFn>,
}

impl ServerHandle {
    /// Asks every shard to close its clients with 1001 and stop.
    pub fn shutdown(&self) {
        for tx in &self.control {
            let _ = tx.send(ShardMsg::Shutdown);
        }
    }

    /// Waits for the shards, then stops and joins the broker threads.
    pub fn join(mut self) {
        for h in self.shards.drain(..) {
            let _ = h.join();
        }
        drop(self.control);
        if let Some(stop) = self.broker_stop.take() {
            stop();
        }
        for h in self.broker.drain(..) {
            let _ = h.join();
        }
    }
}

/// Starts a node with `config`.
pub fn start(config: Config) -> std::io::Result<ServerHandle> {
    let config = Arc::new(config);
    // Before anything starts: a key that cannot be used is a startup error.
    let auth = match &config.jwt {
        Some(jwt) => {
            Some(Arc::new(crate::auth::Verifier::new(jwt).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
            })?))
        }
        None => None,
    };
    if auth.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            addr = %config.listen,
            "listening on a non-loopback address without authentication: anyone who reaches \
             the port may subscribe and publish to any channel (set --jwt-secret or \
             --jwt-public-key)"
        );
    }
    let std_listener = std::net::TcpListener::bind(config.listen)?;
    // std listens with a backlog of 128, which a connect storm overflows (SYN retries
    // of a second); Linux lets a second listen() raise it (capped by somaxconn).
    let socket = socket2::Socket::from(std_listener);
    socket.listen(LISTEN_BACKLOG)?;
    let std_listener: std::net::TcpListener = socket.into();
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let mut listener = Some(TcpListener::from_std(std_listener));
    let n = config.shards;
    let metrics = Arc::new(Metrics::new(n));
    let health = Arc::new(Health::default());

    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    let (mut data_tx, mut data_rx, mut control_tx, mut control_rx) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = inbox(waker.clone(), Some(shard_queue()));
        data_tx.push(tx);
        data_rx.push(rx);
        let (tx, rx) = inbox(waker.clone(), None);
        control_tx.push(tx);
        control_rx.push(rx);
        polls.push(poll);
        wakers.push(waker);
    }
    let links = ShardLinks {
        data: data_tx,
        control: control_tx.clone(),
        metrics: metrics.clone(),
    };

    let mut inline_broker = None;
    let (broker_handle, mut broker_threads, broker_stop): (
        BrokerHandle,
        Vec<JoinHandle<()>>,
        Option<StopFn>,
    ) = match &config.redis {
        None => {
            let (tx, rx) = crossbeam_channel::bounded(broker::memory::QUEUE);
            let thread = broker::memory::spawn(rx, links, config.clone())?;
            (BrokerHandle::Memory(tx), vec![thread], None)
        }
        Some(url) if config.is_cluster() => {
            if config.inline_broker && n > 1 {
                tracing::info!("--broker-threads inline: Redis Cluster keeps its own threads");
            }
            let started = broker::cluster::start(url, &config, links, health.clone())?;
            (started.handle, started.threads, Some(started.stop))
        }
        Some(url) => {
            // Inline: the reader and writer run on shard 0's loop (it already wakes for
            // the listener; one loop serves the other shards' commands like a thread).
            let on = match config.inline_broker {
                true => Some(broker::redis::OnShard {
                    registry: polls[0].registry().try_clone()?,
                    waker: wakers[0].clone(),
                }),
                false => None,
            };
            let started = broker::redis::start(url, &config, links, health.clone(), on)?;
            inline_broker = started.inline;
            (started.handle, started.threads, Some(started.stop))
        }
    };
    drop(wakers);

    let presence = crate::presence::start(&config, control_tx.clone(), metrics.clone())?;
    let presence_handle = presence.as_ref().map(|p| p.handle.clone());
    if let Some(p) = presence {
        // Joined after the shards: it ends (removing this node's entries) once the
        // shards have dropped their handles.
        broker_threads.push(p.thread);
    }

    let per_ip = Arc::new(crate::shard::admission::PerIp::default());
    let per_user = Arc::new(crate::shard::admission::PerUser::default());
    let mut shards = Vec::with_capacity(n);
    for (id, ((poll, data), control)) in polls.into_iter().zip(data_rx).zip(control_rx).enumerate()
    {
        let setup = ShardSetup {
            id: crate::ids::ShardId::new(id),
            poll,
            data,
            control,
            listener: if id == 0 { listener.take() } else { None },
            peers: control_tx.clone(),
            broker: broker_handle.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            presence: presence_handle.clone(),
            per_ip: per_ip.clone(),
            per_user: per_user.clone(),
            auth: auth.clone(),
            inline_broker: if id == 0 { inline_broker.take() } else { None },
        };
        let shard = Shard::new(setup);
        shards.push(
            std::thread::Builder::new()
                .name(format!("fanout-shard-{id}"))
                .spawn(move || shard.run())?,
        );
    }
    drop(broker_handle);
    drop(presence_handle);
    Ok(ServerHandle {
        local_addr,
        metrics,
        health,
        control: control_tx,
        shards,
        broker: broker_threads,
        broker_stop,
    })
}
