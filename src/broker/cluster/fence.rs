//! Per-slot order of the cluster writer's commands across a change of owner. While
//! commands for a slot are still unanswered on a node that no longer owns it (they will
//! come back `-MOVED` and be sent again), later commands for that slot wait here, so
//! the new owner gets them in the order they were published. A command Redis refused
//! for now (`-CLUSTERDOWN`, to be sent again in another form) is a *redo*: it waits at
//! the front of its slot's queue, ahead of everything published after it, until nothing
//! of the slot is unanswered anywhere; if a later command of the slot went through in
//! the meantime, sending it now would put it out of order, so it is given back to be
//! refused instead. State and decisions only: the writer sends and answers; this never
//! does I/O and never holds more than `cap` commands (past that the writer refuses
//! them, `unavailable`).

use std::collections::VecDeque;

use smallvec::SmallVec;

use crate::hash::{fast_map, FastMap};

/// Commands in flight per slot, by node, and commands held per slot.
pub struct Fence<T> {
    /// slot → (node key, unanswered commands there).
    inflight: FastMap<u16, SmallVec<[(usize, u32); 2]>>,
    held: FastMap<u16, VecDeque<T>>,
    /// slot → how many of its held commands, at the front, are redos.
    redo: FastMap<u16, usize>,
    held_total: usize,
    cap: usize,
}

impl<T> Fence<T> {
    pub fn new(cap: usize) -> Fence<T> {
        Fence {
            inflight: fast_map(),
            held: fast_map(),
            redo: fast_map(),
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

    /// Holds `cmd`, refused for now, to be sent again after the slot's earlier redos and
    /// before every command held after it; gives it back when full.
    pub fn redo(&mut self, slot: u16, cmd: T) -> Result<(), T> {
        if self.held_total >= self.cap {
            return Err(cmd);
        }
        let at = self.redo.entry(slot).or_default();
        self.held.entry(slot).or_default().insert(*at, cmd);
        *at += 1;
        self.held_total += 1;
        Ok(())
    }

    /// A command of `slot` went through: the slot's redos, if any, would now come after
    /// it, so they are given back (to be refused) rather than sent.
    pub fn overtaken(&mut self, slot: u16) -> Vec<T> {
        let Some(count) = self.redo.remove(&slot) else {
            return Vec::new();
        };
        let q = self.held.get_mut(&slot).expect("redos are held");
        let out: Vec<T> = q.drain(..count).collect();
        if q.is_empty() {
            self.held.remove(&slot);
        }
        self.held_total -= out.len();
        out
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
        if self.redo.contains_key(&slot) && self.inflight.contains_key(&slot) {
            // A redo goes only after every earlier command of the slot was answered.
            return None;
        }
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
        self.redo.remove(&slot);
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

    #[test]
    fn a_refused_command_goes_again_first_or_not_at_all() {
        let mut f: Fence<u32> = Fence::new(10);
        // 1..=3 in flight on node 1, the owner; 1 comes back CLUSTERDOWN.
        for _ in 1..=3 {
            f.sent(7, 1);
        }
        f.answered(7, 1);
        f.redo(7, 1).unwrap();
        assert!(f.must_wait(7, 1), "later publishes wait behind the redo");
        f.hold(7, 4).unwrap();
        assert!(f.release(7, Some(1)).is_none(), "2 and 3 still unanswered");
        // 2 is refused too: it goes after 1 and before 4.
        f.answered(7, 1);
        f.redo(7, 2).unwrap();
        f.answered(7, 1);
        f.redo(7, 3).unwrap();
        assert_eq!(Vec::from(f.release(7, Some(1)).unwrap()), [1, 2, 3, 4]);
        assert!(!f.must_wait(7, 1));

        // 5 refused, 6 went through: 5 can no longer go in order.
        f.sent(7, 1);
        f.sent(7, 1);
        f.answered(7, 1);
        f.redo(7, 5).unwrap();
        f.hold(7, 7).unwrap();
        f.answered(7, 1);
        assert_eq!(f.overtaken(7), [5]);
        assert!(f.overtaken(7).is_empty());
        assert_eq!(Vec::from(f.release(7, Some(1)).unwrap()), [7]);
        assert!(f.held_slots().is_empty());
        assert!(
            f.overtaken(8).is_empty(),
            "a slot without redos gives nothing"
        );
    }
}
