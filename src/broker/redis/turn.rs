//! `Turn`: what a driver (`driver.rs`) asks of a Redis connection's state machine. A leaf
//! of `broker::redis`: the reader and writer implement it, the drivers call it, and it
//! imports neither, so the three files do not import each other in a circle.

use std::time::{Duration, Instant};

use mio::Token;

use crate::broker::BrokerCmd;
use crate::inbox::Inbox;

/// A Redis connection's state machine, as a driver sees it.
pub trait Turn {
    /// The token its link's socket is registered with.
    fn token(&self) -> Token;
    /// How long the driver may sleep before the machine needs a turn.
    fn timeout(&self, now: Instant) -> Duration;
    /// Its socket is ready.
    fn ready(&mut self, now: Instant);
    /// One turn: link upkeep, what Redis sent, the commands waiting in `inbox`, flush.
    fn turn(&mut self, inbox: &Inbox<BrokerCmd>, now: Instant);
}
