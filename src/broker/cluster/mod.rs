//! Redis Cluster mode with sharded pub/sub (`--redis-cluster`, `redis[s]+cluster://`): a
//! reader thread with one `SSUBSCRIBE` connection per primary (the node's `Router`,
//! a probe per primary, resubscription on the new owner after a failover or a slot
//! migration) and a writer thread with one pipelined `SPUBLISH` connection per primary
//! (a script keyed on the channel that only the primary runs, `plain`; history channels
//! through the publish script with `SPUBLISH`; following `-MOVED` and `-ASK`, in each
//! slot's order, `fence`). Each thread learns the slot map itself (`topology`). The single-Redis broker
//! (`broker::redis`) is a separate path, untouched by this one; both share the Router,
//! RESP, the link and the history scripts. Neither thread ever blocks on a shard or on
//! Redis.

mod fence;
mod plain;
pub mod reader;
pub mod topology;
pub mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::redis::{Started, QUEUE};
use super::{BrokerHandle, ShardLinks};
use crate::config::Config;
use crate::health::Health;
use crate::inbox::{inbox, Inbox};
use crate::redis::cluster::{key_slot, SlotMap};
use crate::redis::link::Link;
use crate::redis::RedisUrl;

pub(crate) const WAKER: Token = Token(0);
pub(crate) const TOPOLOGY: Token = Token(1);
/// Node connections use tokens from here on (`FIRST + slab key`).
pub(crate) const FIRST: usize = 2;

/// A node as both threads name it: host and port.
pub type Addr = (String, u16);

/// The address of the primary serving `channel`'s slot in `map`.
pub fn owner(map: &SlotMap, channel: &[u8], tls: bool) -> Option<Addr> {
    let node = map.primary(key_slot(channel))?;
    Some((node.host.clone(), node.port_for(tls)?))
}

/// Every primary of `map`.
pub fn primaries(map: &SlotMap, tls: bool) -> Vec<Addr> {
    map.primaries()
        .into_iter()
        .filter_map(|n| Some((n.host.clone(), n.port_for(tls)?)))
        .collect()
}

/// A channel name starting with `prefix` whose slot `primary` serves in `map` (a hash tag
/// picks it): the probe of one primary.
pub fn channel_on(map: &SlotMap, primary: &Addr, prefix: &str, tls: bool) -> Option<String> {
    (0..1_000_000u32).find_map(|n| {
        let name = format!("{prefix}{{{n}}}");
        (owner(map, name.as_bytes(), tls).as_ref() == Some(primary)).then_some(name)
    })
}

/// Waits for a cluster thread's next events: at most until the topology or a node's link
/// needs attention, not at all when its inbox has work. Returns whether the topology
/// connection is ready and the slab keys of the node connections that are.
pub(crate) fn wait<'a, T>(
    poll: &mut Poll,
    events: &mut Events,
    inbox: &Inbox<T>,
    topo: &topology::Topology,
    links: impl Iterator<Item = &'a Link>,
) -> (bool, Vec<usize>) {
    let now = Instant::now();
    let mut timeout = topo.timeout(now);
    for t in links.filter_map(|l| l.timeout(now)) {
        timeout = timeout.min(t);
    }
    if !inbox.park() {
        timeout = Duration::ZERO;
    }
    let _ = poll.poll(events, Some(timeout));
    inbox.unpark();
    let mut topo_ready = false;
    let mut ready = Vec::new();
    for event in events.iter() {
        match event.token() {
            TOPOLOGY => topo_ready = true,
            Token(t) if t >= FIRST => ready.push(t - FIRST),
            _ => {}
        }
    }
    (topo_ready, ready)
}

/// Starts the reader and writer threads on the cluster that `url` names.
pub fn start(
    url: &str,
    config: &Arc<Config>,
    links: ShardLinks,
    health: Arc<Health>,
) -> std::io::Result<Started> {
    let seeds = RedisUrl::parse_cluster(url, &config.redis_tls)?;
    if seeds[0].tls.as_ref().is_some_and(|t| !t.verified()) {
        health.tls_unverified.store(true, Ordering::Relaxed);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(topology::Shared::default());

    let writer_poll = Poll::new()?;
    let writer_waker = Arc::new(Waker::new(writer_poll.registry(), WAKER)?);
    let (writer_tx, writer_rx) = inbox(writer_waker.clone(), Some(QUEUE));

    let reader_poll = Poll::new()?;
    let reader_waker = Arc::new(Waker::new(reader_poll.registry(), WAKER)?);
    let (reader_tx, reader_rx) = inbox(reader_waker.clone(), Some(QUEUE));

    let writer = writer::Writer::new(
        writer_poll,
        writer_rx,
        seeds.clone(),
        shared.clone(),
        links.clone(),
        health.clone(),
        stop.clone(),
        config.clone(),
    );
    let reader = reader::Reader::new(
        reader_poll,
        reader_rx,
        seeds,
        shared,
        links,
        health,
        writer_tx.clone(),
        &config.server_id,
        config.limits.max_message,
        stop.clone(),
    );
    let threads = vec![
        std::thread::Builder::new()
            .name("fanout-cluster-reader".into())
            .spawn(move || reader.run())?,
        std::thread::Builder::new()
            .name("fanout-cluster-writer".into())
            .spawn(move || writer.run())?,
    ];
    let stop_fn = move || {
        stop.store(true, Ordering::SeqCst);
        let _ = reader_waker.wake();
        let _ = writer_waker.wake();
    };
    Ok(Started {
        handle: BrokerHandle::redis(reader_tx, writer_tx),
        threads,
        stop: Box::new(stop_fn),
        inline: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::cluster::{Node, SlotRange};

    fn node(port: u16) -> Node {
        Node {
            host: "h".into(),
            port: Some(port),
            tls_port: Some(port + 1000),
            id: Some(port.to_string()),
        }
    }

    #[test]
    fn probes_and_channels_land_on_the_primary_that_serves_them() {
        let range = |start, end, port| SlotRange {
            start,
            end,
            primary: node(port),
            replicas: vec![],
        };
        // One primary with a single slot: its probe still finds a name.
        let map = SlotMap::new(vec![
            range(0, 100, 1),
            range(101, 101, 2),
            range(102, 16383, 3),
        ])
        .unwrap();
        assert_eq!(primaries(&map, false).len(), 3);
        for port in [1, 2, 3] {
            let addr: Addr = ("h".into(), port);
            let name = channel_on(&map, &addr, "__fanout:probe:x:", false).unwrap();
            assert_eq!(owner(&map, name.as_bytes(), false), Some(addr));
        }
        // TLS dials the TLS port.
        assert_eq!(
            owner(&map, b"{0}", true).unwrap().1 % 1000,
            owner(&map, b"{0}", false).unwrap().1
        );
        assert_eq!(owner(&SlotMap::default(), b"x", false), None);
    }
}
