//! A shard's intake: the back-pressure that decides how much of its inbox to take per
//! turn (the shard drains it, see `io.rs`) — nothing while most connections lag
//! (`Intake::stalled`), and no more than a quarter of the outbound limit per connection
//! between two flushes (`Intake::budget`) — plus the pacing of flushes. The state of
//! those decisions is `Intake`, a plain struct with no socket in it (unit-tested below);
//! the shard feeds it what its flushes saw.

use std::time::{Duration, Instant};

use crate::config::Config;

/// See `config::Tuning`.
const MAX_STALL: Duration = crate::config::TUNING.max_stall;
/// See `config::Tuning`.
const MIN_LAGGING: usize = crate::config::TUNING.min_lagging;

/// The shard's intake and flush-pacing state.
#[derive(Debug)]
pub struct Intake {
    /// When connections were last flushed (flushes are paced by `flush_interval`).
    pub last_flush: Instant,
    /// The last flush averaged two or more frames per connection: pace the next one.
    pub paced: bool,
    /// Deliveries queued since the last flush (what pacing looks at).
    pub messages_since_flush: u64,
    /// Connections with output left after their last write (see `Conn::lagging`).
    pub lagging: usize,
    /// Last time a lagging connection wrote something (or started lagging).
    pub lag_progress: Instant,
    /// Some connection was handed a quarter of the outbound limit since the last flush
    /// (or one channel got that much this turn): take no more deliveries until the
    /// flush has shown who lags. See `Intake::budget`.
    pub hold: bool,
    /// Intake is paused for lagging connections (see `stalled`).
    paused: bool,
}

impl Intake {
    pub fn new(now: Instant) -> Intake {
        Intake {
            last_flush: now,
            paced: false,
            messages_since_flush: 0,
            lagging: 0,
            lag_progress: now,
            hold: false,
            paused: false,
        }
    }

    /// Back-pressure from the sockets: while many connections are lagging (output left
    /// over after their last write: kernel buffers full), taking more deliveries would
    /// only grow every queue until the slow-consumer policy closed them all. Intake
    /// pauses instead, the shard queue fills and the router drops, counts and owes
    /// `gap`s: fanout then runs at the pace its clients read, like a single-threaded
    /// server would. The pause holds only while lagging connections make progress: if
    /// none has written a byte for `MAX_STALL`, they are stuck, intake resumes and the
    /// slow-consumer policy deals with them. `open`: connections of the shard.
    pub fn stalled(&mut self, now: Instant, open: usize) -> bool {
        // A few slow clients never pause anyone (they meet the slow-consumer policy);
        // an eighth of the shard, and at least 32 connections, lagging is the client
        // side as a whole not keeping up. Once paused, the pause holds down to half
        // that: readers drain in bursts, and a count that dips for a moment must not
        // let a full flood through to connections already near their limit.
        let (min, share) = if self.paused {
            (MIN_LAGGING / 2, 16)
        } else {
            (MIN_LAGGING, 8)
        };
        self.paused = self.lagging >= min
            && self.lagging * share > open
            && now.saturating_duration_since(self.lag_progress) < MAX_STALL;
        self.paused
    }

    /// How long until the next flush may run. While connections receive several frames
    /// per flush (high per-connection rates), flushes are paced to one per `interval`,
    /// so each `writev` carries many frames; otherwise (one frame per connection per
    /// flush, the common case) output is written at the end of the turn.
    pub fn flush_due_in(&self, now: Instant, interval: Duration) -> Duration {
        if !self.paced {
            return Duration::ZERO;
        }
        interval.saturating_sub(now.saturating_duration_since(self.last_flush))
    }

    /// A connection's write left output behind (`wrote`: bytes it did write).
    pub fn lag_seen(&mut self, was_lagging: bool, wrote: usize, now: Instant) {
        if !was_lagging {
            self.lagging += 1;
            self.lag_progress = now;
        } else if wrote > 0 {
            self.lag_progress = now;
        }
    }

    /// A lagging connection's queue emptied (`now`), or it closed (`None`).
    pub fn lag_ended(&mut self, now: Option<Instant>) {
        self.lagging = self.lagging.saturating_sub(1);
        if let Some(now) = now {
            self.lag_progress = now;
        }
    }

    /// Every frame taken may be queued to all of a channel's subscribers, so between two
    /// flushes (several turns when flushes are paced) no connection is handed more than a
    /// quarter of the outbound limit: the flush sees it lagging (and intake pauses, see
    /// `stalled`) before the shard alone has pushed it past the limit. Measured per
    /// connection, not per shard, so many channels at high rates are not capped together.
    pub fn budget(config: &Config) -> usize {
        (config.limits.outbound_limit / 4).max(1)
    }

    /// A flush made `writes` writes: pace the next one only while connections get
    /// several messages per write, evidence that per-connection rates are high and
    /// batching pays.
    pub fn flushed(&mut self, writes: u64) {
        self.hold = false;
        if writes > 0 {
            self.paced = std::mem::take(&mut self.messages_since_flush) >= 2 * writes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_pauses_only_while_many_lagging_connections_progress() {
        let t0 = Instant::now();
        let mut i = Intake::new(t0);
        for _ in 0..40 {
            i.lag_seen(false, 0, t0);
        }
        assert!(!i.stalled(t0, 400), "40 of 400 is not an eighth");
        assert!(i.stalled(t0, 100), "40 of 100 lag");
        assert!(!i.stalled(t0 + MAX_STALL, 100), "no progress for MAX_STALL");
        i.lag_seen(true, 10, t0 + MAX_STALL);
        assert!(i.stalled(t0 + MAX_STALL, 100), "progress renews the pause");
        for _ in 0..10 {
            i.lag_ended(None);
        }
        assert!(
            i.stalled(t0 + MAX_STALL, 100),
            "paused: 30 lagging still holds"
        );
        for _ in 0..15 {
            i.lag_ended(None);
        }
        assert!(!i.stalled(t0 + MAX_STALL, 100), "15 lagging ends the pause");
        for _ in 0..15 {
            i.lag_seen(false, 0, t0 + MAX_STALL);
        }
        assert!(
            !i.stalled(t0 + MAX_STALL, 100),
            "30 is too few to start one"
        );
    }

    #[test]
    fn flushes_are_paced_only_while_writes_carry_several_messages() {
        let t0 = Instant::now();
        let mut i = Intake::new(t0);
        let every = Duration::from_millis(10);
        assert_eq!(i.flush_due_in(t0, every), Duration::ZERO);
        i.messages_since_flush = 20;
        i.flushed(10);
        assert!(i.paced);
        assert_eq!(i.flush_due_in(t0, every), every);
        assert_eq!(i.flush_due_in(t0 + every, every), Duration::ZERO);
        i.messages_since_flush = 10;
        i.flushed(10);
        assert!(!i.paced, "one message per write: no pacing");
    }
}
