//! Per-slot order of the cluster writer's commands across a change of owner. While
//! commands for a slot are still unanswered on a node that no longer owns it (they will
//! come back `-MOVED` and be sent again), later commands for that slot wait here, so
//! the new owner gets them in the order they were published. State and decisions only:
//! the writer sends and answers; this never does I/O and never holds more than `cap`
//! commands (past that the writer refuses them, `unavailable`).

use std::collections::VecDeque;

use smallvec::SmallVec;

use crate::hash::{fast_map, FastMap};

/// Commands in flight per slot, by node, and commands held per slot.
pub struct Fence<T> {
    /// slot → (node key, unanswered commands there).
    inflight: FastMap<u16, SmallVec<[(usize, u32); 2]>>,
    held: FastMap<u16, VecDeque<T>>,
    held_total: usize,
    cap: usize,
}

impl<T> Fence<T> {
    pub fn new(cap: usize) -> Fence<T> {
        Fence {
            inflight: fast_map(),
            held: fast_map(),
            held_total: 0,
            cap,
        }
    }

    /// Whether a command for `slot` whose owner is node `owner` must wait: commands of
    /// the slot are held already, or unanswered on another node.
    pub fn must_wait(&self, slot: u16, owner: usize) -> bool {
        self.held.contains_key(&slot)
            || self
                .inflight
                .get(&slot)
                .is_some_and(|v| v.iter().any(|&(n, _)| n != owner))
    }

    /// Holds `cmd` behind the slot's earlier commands; gives it back when full.
    pub fn hold(&mut self, slot: u16, cmd: T) -> Result<(), T> {
        if self.held_total >= self.cap {
            return Err(cmd);
        }
        self.held.entry(slot).or_default().push_back(cmd);
        self.held_total += 1;
        Ok(())
    }

    /// A command for `slot` went to node `node`.
    pub fn sent(&mut self, slot: u16, node: usize) {
        let v = self.inflight.entry(slot).or_default();
        match v.iter_mut().find(|(n, _)| *n == node) {
            Some((_, c)) => *c += 1,
            None => v.push((node, 1)),
        }
    }

    /// A command for `slot` on node `node` was answered (or failed with its connection).
    pub fn answered(&mut self, slot: u16, node: usize) {
        let Some(v) = self.inflight.get_mut(&slot) else {
            return;
        };
        if let Some(i) = v.iter().position(|&(n, _)| n == node) {
            v[i].1 -= 1;
            if v[i].1 == 0 {
                v.swap_remove(i);
            }
        }
        if v.is_empty() {
            self.inflight.remove(&slot);
        }
    }

    /// The slots with commands held.
    pub fn held_slots(&self) -> Vec<u16> {
        self.held.keys().copied().collect()
    }

    /// The commands held for `slot`, in order, once nothing of the slot is unanswered on
    /// a node other than `owner` (`None`: the owner is unknown, so they can go nowhere
    /// and are all given back to be refused).
    pub fn release(&mut self, slot: u16, owner: Option<usize>) -> Option<VecDeque<T>> {
        if let Some(owner) = owner {
            let elsewhere = self
                .inflight
                .get(&slot)
                .is_some_and(|v| v.iter().any(|&(n, _)| n != owner));
            if elsewhere {
                return None;
            }
        }
        let q = self.held.remove(&slot)?;
        self.held_total -= q.len();
        Some(q)
    }
}

#[cfg(test)]
mod tests {
    use super::Fence;

    #[test]
    fn a_slot_waits_while_its_commands_are_unanswered_on_the_old_owner() {
        let mut f: Fence<u32> = Fence::new(10);
        // 95..=98 went to node 1; the map now says node 2 owns the slot.
        for _ in 95..=98 {
            f.sent(7, 1);
        }
        assert!(!f.must_wait(7, 1), "same owner: no wait");
        assert!(f.must_wait(7, 2));
        f.hold(7, 99).unwrap();
        f.hold(7, 100).unwrap();
        assert!(f.must_wait(7, 1), "held commands keep their turn");
        assert!(!f.must_wait(8, 2), "other slots are not held");
        // 95 comes back MOVED and is sent again to node 2: 96..=98 still on node 1.
        f.answered(7, 1);
        f.sent(7, 2);
        assert!(f.release(7, Some(2)).is_none());
        for _ in 96..=98 {
            f.answered(7, 1);
            f.sent(7, 2);
        }
        let q = f.release(7, Some(2)).unwrap();
        assert_eq!(Vec::from(q), [99, 100]);
        assert!(!f.must_wait(7, 2));
        assert!(f.held_slots().is_empty());
    }

    #[test]
    fn holding_is_bounded_and_an_unknown_owner_gives_everything_back() {
        let mut f: Fence<u32> = Fence::new(2);
        f.sent(1, 5);
        f.hold(1, 1).unwrap();
        f.hold(1, 2).unwrap();
        assert_eq!(f.hold(1, 3), Err(3));
        assert_eq!(Vec::from(f.release(1, None).unwrap()), [1, 2]);
        f.hold(1, 4).unwrap();
        f.answered(1, 5);
        assert_eq!(Vec::from(f.release(1, Some(6)).unwrap()), [4]);
    }
}
