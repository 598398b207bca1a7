//! Per-stream sequence tracking: classifies each received sequence number as in order,
//! after a gap, a late (reordered) arrival filling an earlier gap, or a duplicate.

use std::collections::BTreeMap;

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

/// Tracks one (subscriber, publisher, channel) stream; sequence numbers start at 0.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    next: u64,
    /// Missing half-open ranges, `lo -> hi` for [lo, hi). Every range holds at least one
    /// message not (yet) received, so this grows with loss, never with traffic; it is not
    /// capped, so a late arrival is never mistaken for a duplicate however many gaps
    /// came before it (a cap of 256 used to do that).
    gaps: BTreeMap<u64, u64>,
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
    /// first: the gaps plus the tail after the newest one received.
    pub fn missing(&self, published: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .gaps
            .iter()
            .map(|(&lo, &hi)| (lo, hi))
            .filter(|g| g.0 < published)
            .map(|(lo, hi)| (lo, hi.min(published)))
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
            self.gaps.insert(self.next, s);
            self.next = s + 1;
            return Seen::Gap(missed);
        }
        // s < next: late (inside a gap) or duplicate.
        let Some((&lo, &hi)) = self.gaps.range(..=s).next_back() else {
            return Seen::Duplicate;
        };
        if s >= hi {
            return Seen::Duplicate;
        }
        self.gaps.remove(&lo);
        if lo < s {
            self.gaps.insert(lo, s);
        }
        if s + 1 < hi {
            self.gaps.insert(s + 1, hi);
        }
        Seen::Reordered
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
    fn late_arrivals_past_many_gaps_are_not_duplicates() {
        let mut t = Tracker::new();
        // 1000 gaps: every even number is missing.
        for i in 0..1000u64 {
            t.observe(i * 2 + 1);
        }
        assert_eq!(t.observe(1996), Seen::Reordered);
        // The oldest gap (0) is 999 gaps back: still late, not a duplicate.
        assert_eq!(t.observe(0), Seen::Reordered);
        assert_eq!(t.observe(0), Seen::Duplicate);
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.missing(2000).len(), 998);
    }
}
