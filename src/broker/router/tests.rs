//! Router unit tests: the router is driven with a `Recorder` outbox (bounded data
//! queues, control queues, wake-ups as plain data), no threads or polls.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;

/// Shard `i`.
fn sid(i: usize) -> ShardId {
    ShardId::new(i)
}

/// An outbox that records: per shard, a data queue of 16 and a control queue.
struct Recorder {
    data: Vec<VecDeque<ShardMsg>>,
    control: Vec<VecDeque<ShardMsg>>,
    woken: Vec<usize>,
}

impl Outbox for Recorder {
    fn shards(&self) -> usize {
        self.data.len()
    }
    fn is_full(&self, shard: ShardId) -> bool {
        self.data[shard.index()].len() >= 16
    }
    fn send_data(&mut self, shard: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        if self.is_full(shard) {
            return Err(msg);
        }
        self.data[shard.index()].push_back(msg);
        Ok(())
    }
    fn control(&mut self, shard: ShardId, msg: ShardMsg) {
        self.control[shard.index()].push_back(msg);
    }
    fn wake(&mut self, shard: ShardId) {
        self.woken.push(shard.index());
    }
}

fn setup(n: usize) -> (Router, Recorder) {
    let out = Recorder {
        data: (0..n).map(|_| VecDeque::new()).collect(),
        control: (0..n).map(|_| VecDeque::new()).collect(),
        woken: Vec::new(),
    };
    (Router::new(Arc::new(Metrics::new(n))), out)
}

fn subscribed(q: &mut VecDeque<ShardMsg>) -> Vec<u32> {
    q.drain(..)
        .filter_map(|m| match m {
            ShardMsg::Subscribed { epoch, .. } => Some(epoch),
            _ => None,
        })
        .collect()
}

fn kinds(q: &mut VecDeque<ShardMsg>) -> Vec<&'static str> {
    q.drain(..)
        .map(|m| match m {
            ShardMsg::Deliver { .. } => "deliver",
            ShardMsg::Gap { .. } => "gap",
            ShardMsg::Subscribed { .. } => "subscribed",
            ShardMsg::Unconfirmed => "unconfirmed",
            ShardMsg::UnconfirmedChannel { .. } => "unconfirmed-one",
            _ => "other",
        })
        .collect()
}

#[test]
fn refcounts_per_shard_and_confirms_waiters() {
    let (mut r, mut o) = setup(2);
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(0), 1), Wire::Subscribe);
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(1), 1), Wire::Nothing);
    assert!(subscribed(&mut o.control[0]).is_empty());
    r.confirmed(&mut o, "c");
    assert_eq!(subscribed(&mut o.control[0]), vec![1]);
    assert_eq!(subscribed(&mut o.control[1]), vec![1]);
    // Live: a new shard subscription is confirmed at once.
    assert_eq!(r.unsubscribe("c", sid(1)), Wire::Nothing);
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(1), 2), Wire::Nothing);
    assert_eq!(subscribed(&mut o.control[1]), vec![2]);
    assert_eq!(r.unsubscribe("c", sid(0)), Wire::Nothing);
    assert_eq!(r.unsubscribe("c", sid(1)), Wire::Unsubscribe);
    assert_eq!(r.channels(), 0);
}

#[test]
fn resubscribe_while_unsubscribe_in_flight_waits_for_the_latest_confirmation() {
    let (mut r, mut o) = setup(1);
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(0), 1), Wire::Subscribe);
    assert_eq!(r.unsubscribe("c", sid(0)), Wire::Unsubscribe);
    // Entry kept (one SUBSCRIBE in flight), but after the UNSUBSCRIBE a new
    // SUBSCRIBE must go out, and only its confirmation counts.
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(0), 2), Wire::Subscribe);
    r.confirmed(&mut o, "c");
    assert!(subscribed(&mut o.control[0]).is_empty());
    r.confirmed(&mut o, "c");
    assert_eq!(subscribed(&mut o.control[0]), vec![2]);
}

#[test]
fn dispatch_shares_one_frame_and_counts_drops() {
    let (mut r, mut o) = setup(2);
    r.subscribe(&mut o, "c".into(), sid(0), 1);
    r.subscribe(&mut o, "c".into(), sid(1), 1);
    assert_eq!(r.dispatch(&mut o, "c", b"1", Some(true), None), 2);
    assert!(o.woken.is_empty(), "no wake-up per message");
    r.wake(&mut o);
    assert_eq!(o.woken, [0, 1], "one wake-up per shard per batch");
    let a = match o.data[0].pop_front() {
        Some(ShardMsg::Deliver { frame, .. }) => frame,
        other => panic!("{other:?}"),
    };
    let b = match o.data[1].pop_front() {
        Some(ShardMsg::Deliver { frame, .. }) => frame,
        other => panic!("{other:?}"),
    };
    assert_eq!(a.as_ptr(), b.as_ptr(), "one buffer shared by both shards");
    assert_eq!(r.dispatch(&mut o, "nobody", b"1", Some(true), None), 0);
    for _ in 0..20 {
        r.dispatch(&mut o, "c", b"1", Some(true), None);
    }
    assert!(r.metrics.dispatch_dropped.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_dropped_delivery_is_followed_by_a_gap_notice() {
    let (mut r, mut o) = setup(1);
    r.subscribe(&mut o, "c".into(), sid(0), 1);
    for _ in 0..20 {
        r.dispatch(&mut o, "c", b"1", Some(true), None);
    }
    let queued = o.data[0].drain(..).count();
    assert_eq!(queued, 16, "queue capacity");
    assert_eq!(r.metrics.dispatch_dropped.load(Ordering::Relaxed), 4);
    assert_eq!(r.dispatch(&mut o, "c", b"2", Some(true), None), 1);
    assert!(matches!(o.data[0].pop_front(), Some(ShardMsg::Gap { .. })));
    assert!(matches!(
        o.data[0].pop_front(),
        Some(ShardMsg::Deliver { .. })
    ));
    // Owed once: the next delivery comes alone.
    r.dispatch(&mut o, "c", b"3", Some(true), None);
    assert!(matches!(
        o.data[0].pop_front(),
        Some(ShardMsg::Deliver { .. })
    ));
    assert!(o.data[0].pop_front().is_none());
}

#[test]
fn a_gap_notice_queues_behind_the_deliveries_already_queued() {
    let (mut r, mut o) = setup(1);
    r.subscribe(&mut o, "c".into(), sid(0), 1);
    r.confirmed(&mut o, "c");
    subscribed(&mut o.control[0]);
    r.dispatch(&mut o, "c", b"1", Some(true), None);
    r.dispatch(&mut o, "c", b"2", Some(true), None);
    r.gap(&mut o, "c");
    assert_eq!(kinds(&mut o.data[0]), ["deliver", "deliver", "gap"]);
    assert!(
        kinds(&mut o.control[0]).is_empty(),
        "no gap can overtake on another queue"
    );
    // Owed while the queue is full, sent as soon as it has room, without waiting
    // for the next delivery.
    for _ in 0..16 {
        r.dispatch(&mut o, "c", b"1", Some(true), None);
    }
    r.gap(&mut o, "c");
    r.send_owed_gaps(&mut o);
    assert_eq!(kinds(&mut o.data[0]).len(), 16);
    r.send_owed_gaps(&mut o);
    assert_eq!(kinds(&mut o.data[0]), ["gap"]);
    r.send_owed_gaps(&mut o);
    assert!(kinds(&mut o.data[0]).is_empty(), "owed once");
}

#[test]
fn an_oversized_message_is_dropped_counted_and_owes_a_gap() {
    let (r, mut o) = setup(2);
    let mut r = r.with_max_message(4);
    r.subscribe(&mut o, "c".into(), sid(0), 1);
    r.subscribe(&mut o, "c".into(), sid(1), 1);
    assert_eq!(r.dispatch(&mut o, "c", b"12345", Some(true), None), 0);
    assert_eq!(r.metrics.broker_too_large.load(Ordering::Relaxed), 1);
    assert!(kinds(&mut o.data[0]).is_empty());
    assert_eq!(r.dispatch(&mut o, "c", b"1234", Some(true), None), 2);
    assert_eq!(kinds(&mut o.data[0]), ["gap", "deliver"]);
    r.dispatch(&mut o, "c", b"123456", Some(true), None);
    r.send_owed_gaps(&mut o);
    assert_eq!(kinds(&mut o.data[1]), ["gap", "deliver", "gap"]);
}

#[test]
fn a_lost_connection_unconfirms_every_route_until_resubscribed() {
    let (mut r, mut o) = setup(2);
    assert_eq!(r.subscribe(&mut o, "c".into(), sid(0), 7), Wire::Subscribe);
    r.confirmed(&mut o, "c");
    assert_eq!(kinds(&mut o.control[0]), ["subscribed"]);
    r.lost(&mut o);
    assert_eq!(kinds(&mut o.control[0]), ["unconfirmed"]);
    assert_eq!(kinds(&mut o.control[1]), ["unconfirmed"]);
    assert!(!r.route("c").unwrap().live);
    // A new shard is not confirmed while the connection is down...
    r.subscribe(&mut o, "c".into(), sid(1), 3);
    assert!(kinds(&mut o.control[1]).is_empty());
    // ...and on resubscribe every shard is confirmed again, with its own epoch.
    for ch in r.reset() {
        r.resubscribing(&ch);
    }
    r.confirmed(&mut o, "c");
    assert_eq!(subscribed(&mut o.control[0]), vec![7]);
    assert_eq!(subscribed(&mut o.control[1]), vec![3]);
}

#[test]
fn reset_keeps_channels_with_subscribers() {
    let (mut r, mut o) = setup(1);
    r.subscribe(&mut o, "a".into(), sid(0), 1);
    r.confirmed(&mut o, "a");
    let again = r.reset();
    assert_eq!(again.len(), 1);
    assert!(!r.route("a").unwrap().live);
}

#[test]
fn losing_one_channel_unconfirms_only_it_and_its_shards() {
    let (mut r, mut o) = setup(3);
    r.subscribe(&mut o, "a".into(), sid(0), 1);
    r.subscribe(&mut o, "a".into(), sid(1), 2);
    r.subscribe(&mut o, "b".into(), sid(2), 5);
    r.confirmed(&mut o, "a");
    r.confirmed(&mut o, "b");
    for q in &mut o.control {
        q.clear();
    }
    assert!(r.lost_one(&mut o, "a"));
    assert_eq!(kinds(&mut o.control[0]), ["unconfirmed-one"]);
    assert_eq!(kinds(&mut o.control[1]), ["unconfirmed-one"]);
    assert!(
        kinds(&mut o.control[2]).is_empty(),
        "b's shard is untouched"
    );
    let a = r.route("a").unwrap();
    assert!(!a.live && a.was_live);
    assert!(r.route("b").unwrap().live);
    // A new subscriber waits; on the resubscribe every shard of a is confirmed again.
    assert_eq!(r.subscribe(&mut o, "a".into(), sid(2), 9), Wire::Subscribe);
    assert!(kinds(&mut o.control[2]).is_empty());
    r.resubscribing("a");
    r.confirmed(&mut o, "a");
    assert_eq!(subscribed(&mut o.control[0]), vec![1]);
    assert_eq!(subscribed(&mut o.control[1]), vec![2]);
    assert_eq!(subscribed(&mut o.control[2]), vec![9]);
    // A channel nobody wants any more is forgotten, not resubscribed.
    r.unsubscribe("b", sid(2));
    assert!(!r.lost_one(&mut o, "b"));
    assert!(r.route("b").is_none());
}
