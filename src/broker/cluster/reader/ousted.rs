//! Slots a node told us it no longer serves: it unsubscribed us on its own from a
//! channel of the slot (`sunsubscribe`), or answered `-MOVED` for it. Such a node is
//! not given that slot's channels again by a map that still names it: the map is older
//! than what the node itself said (read from a node that has not heard of the failover
//! yet). The demoted primary is a replica by then, and a replica accepts `SSUBSCRIBE`:
//! it passes on what its new primary forwards, late, and not all of it (only once the
//! new primary counts it among its replicas), so a history channel there jumped from
//! 96 to 119 with nothing to say that 97–118 were missing. The mark goes once a map
//! names another owner for the slot (the maps have caught up), or after `FOR` (the
//! slot came back to that node before we read a map naming another: stale maps last
//! well under that, and a channel is never left unplaced for good). State only, no I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::broker::cluster::Addr;
use crate::redis::cluster::{key_slot, SlotMap};

/// How long a mark holds at most.
const FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Ousted {
    /// slot → the node that gave it up, and when it said so.
    by_slot: HashMap<u16, (Addr, Instant)>,
}

impl Ousted {
    /// `node` said it no longer serves `channel`'s slot.
    pub fn note(&mut self, channel: &str, node: &Addr, now: Instant) {
        self.by_slot
            .insert(key_slot(channel.as_bytes()), (node.clone(), now));
    }

    /// Whether `channel` must not go to `node`, which gave up its slot.
    pub fn refuses(&self, channel: &str, node: &Addr, now: Instant) -> bool {
        self.by_slot
            .get(&key_slot(channel.as_bytes()))
            .is_some_and(|(n, at)| n == node && now < *at + FOR)
    }

    /// A new map: marks whose slot it gives to another node are done with.
    pub fn caught_up(&mut self, map: &SlotMap, tls: bool) {
        self.by_slot.retain(|&slot, (node, _)| {
            let name = slot_owner(map, slot, tls);
            name.is_none() || name.as_ref() == Some(node)
        });
    }
}

fn slot_owner(map: &SlotMap, slot: u16, tls: bool) -> Option<Addr> {
    let node = map.primary(slot)?;
    Some((node.host.clone(), node.port_for(tls)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::cluster::{Node, SlotRange};

    fn map(owner_of_all: u16) -> SlotMap {
        let node = Node {
            host: "h".into(),
            port: Some(owner_of_all),
            tls_port: None,
            id: Some(owner_of_all.to_string()),
        };
        SlotMap::new(vec![SlotRange {
            start: 0,
            end: 16383,
            primary: node,
            replicas: vec![],
        }])
        .unwrap()
    }

    #[test]
    fn a_node_that_gave_up_a_slot_gets_it_back_only_after_the_maps_caught_up() {
        let old: Addr = ("h".into(), 1);
        let new: Addr = ("h".into(), 2);
        let t = Instant::now();
        let mut o = Ousted::default();
        o.note("room:0", &old, t);
        assert!(o.refuses("room:0", &old, t));
        assert!(!o.refuses("room:0", &new, t));
        // room:2 is in another slot.
        assert!(!o.refuses("room:2", &old, t));
        // A stale map still names the old primary: the mark stays.
        o.caught_up(&map(1), false);
        assert!(o.refuses("room:0", &old, t + Duration::from_secs(1)));
        // ... but not for ever (the slot may really have come back).
        assert!(!o.refuses("room:0", &old, t + FOR));
        // The new owner is named: done.
        o.caught_up(&map(2), false);
        assert!(!o.refuses("room:0", &old, t));
    }
}
