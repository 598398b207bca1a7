//! A shard's clocks: the coarse clock of timeouts (whole seconds since the shard
//! started, what sessions compare their deadlines with), the once-a-second tick, and
//! milliseconds for token buckets. Read once per loop turn; no system call per message.

use std::time::Instant;

#[derive(Debug)]
pub struct Clock {
    started: Instant,
    /// Whole seconds since `started`.
    now: u32,
    last_tick: u32,
}

impl Clock {
    pub fn new(started: Instant) -> Clock {
        Clock {
            started,
            now: 0,
            last_tick: 0,
        }
    }

    /// Reads the time (once per loop turn).
    pub fn update(&mut self) {
        self.now = self.started.elapsed().as_secs() as u32;
    }

    /// Whole seconds since the shard started, as of the last `update`.
    pub fn coarse(&self) -> u32 {
        self.now
    }

    /// Milliseconds since the shard started (token buckets).
    pub fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// True once per new coarse second: the tick is due.
    pub fn tick_due(&mut self) -> bool {
        if self.now == self.last_tick {
            return false;
        }
        self.last_tick = self.now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ticks_once_per_second() {
        let t0 = Instant::now() - Duration::from_millis(2500);
        let mut c = Clock::new(t0);
        assert!(!c.tick_due(), "nothing before the first update");
        c.update();
        assert_eq!(c.coarse(), 2);
        assert!(c.tick_due());
        assert!(!c.tick_due(), "once per second");
        assert!(c.ms() >= 2500);
    }
}
