//! Per-stream sequence tracking: classifies each received sequence number as in order,
//! after a gap, a late (reordered) arrival filling an earlier gap, or a duplicate.

use std::collections::VecDeque;

/// Classification of one received sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    /// Arrived after skipping this many sequence numbers.
    Gap(u64),
    /// Filled an earlier gap (arrived after a higher sequence number).
    Reordered,
    Duplicate,
}

/// Most gap ranges remembered; older ones are treated as permanently lost.
const MAX_GAPS: usize = 256;

/// Tracks one (subscriber, publisher, channel) stream; sequence numbers start at 0.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    next: u64,
    /// Missing half-open ranges [lo, hi), oldest first.
    gaps: VecDeque<(u64, u64)>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Next expected sequence number.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Sequence numbers of `0..published` not received, as half-open ranges, oldest
    /// first: the remembered gaps plus the tail after the newest one received. (Gaps
    /// beyond the newest `MAX_GAPS` are forgotten and not listed.)
    pub fn missing(&self, published: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .gaps
            .iter()
            .filter(|g| g.0 < published)
            .map(|&(lo, hi)| (lo, hi.min(published)))
            .collect();
        if self.next < published {
            v.push((self.next, published));
        }
        v
    }

    pub fn observe(&mut self, s: u64) -> Seen {
        if s == self.next {
            self.next += 1;
            return Seen::InOrder;
        }
        if s > self.next {
            let missed = s - self.next;
            if self.gaps.len() == MAX_GAPS {
                self.gaps.pop_front();
            }
            self.gaps.push_back((self.next, s));
            self.next = s + 1;
            return Seen::Gap(missed);
        }
        // s < next: late or duplicate. Gaps are sorted; search from the newest.
        for i in (0..self.gaps.len()).rev() {
            let (lo, hi) = self.gaps[i];
            if s >= hi {
                break;
            }
            if s >= lo {
                match (s == lo, s + 1 == hi) {
                    (true, true) => {
                        self.gaps.remove(i);
                    }
                    (true, false) => self.gaps[i].0 = s + 1,
                    (false, true) => self.gaps[i].1 = s,
                    (false, false) => {
                        self.gaps[i].1 = s;
                        self.gaps.insert(i + 1, (s + 1, hi));
                    }
                }
                return Seen::Reordered;
            }
        }
        Seen::Duplicate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = Tracker::new();
        for s in 0..100 {
            assert_eq!(t.observe(s), Seen::InOrder);
        }
        assert_eq!(t.next(), 100);
    }

    #[test]
    fn gap_then_reorder_then_duplicate() {
        let mut t = Tracker::new();
        assert_eq!(t.observe(0), Seen::InOrder);
        assert_eq!(t.observe(4), Seen::Gap(3)); // 1,2,3 missing
        assert_eq!(t.observe(2), Seen::Reordered);
        assert_eq!(t.observe(2), Seen::Duplicate);
        assert_eq!(t.observe(1), Seen::Reordered);
        assert_eq!(t.observe(3), Seen::Reordered);
        assert_eq!(t.observe(3), Seen::Duplicate);
        assert_eq!(t.observe(4), Seen::Duplicate);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.observe(5), Seen::InOrder);
    }

    #[test]
    fn missing_lists_gaps_and_tail() {
        let mut t = Tracker::new();
        assert_eq!(t.missing(3), vec![(0, 3)]);
        for s in [0, 1, 4, 5, 9] {
            t.observe(s);
        }
        t.observe(2);
        assert_eq!(t.missing(12), vec![(3, 4), (6, 9), (10, 12)]);
        assert_eq!(t.missing(10), vec![(3, 4), (6, 9)]);
        assert_eq!(t.missing(5), vec![(3, 4)]);
    }

    #[test]
    fn swapped_pair_counts_one_reorder() {
        let mut t = Tracker::new();
        assert_eq!(t.observe(1), Seen::Gap(1));
        assert_eq!(t.observe(0), Seen::Reordered);
        assert_eq!(t.observe(2), Seen::InOrder);
    }

    #[test]
    fn many_gaps_are_bounded() {
        let mut t = Tracker::new();
        for i in 0..1000u64 {
            t.observe(i * 2 + 1);
        }
        assert!(t.gaps.len() <= MAX_GAPS);
        // The newest gap is still known.
        assert_eq!(t.observe(1996), Seen::Reordered);
        // A forgotten one counts as duplicate, never panics.
        assert_eq!(t.observe(0), Seen::Duplicate);
    }
}
