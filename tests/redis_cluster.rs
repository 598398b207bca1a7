//! Redis Cluster groundwork against a real six-process cluster (`common::cluster`): the
//! slot map read from `CLUSTER SHARDS` and `CLUSTER SLOTS` covers every slot with three
//! primaries and agrees between the two, `key_slot` agrees with `CLUSTER KEYSLOT`, and a
//! real `-MOVED` points at the primary the map names.

mod common;

use common::cluster::{command, text, RedisCluster};
use common::{wait_for, DEADLINE};
use fanout::redis::cluster::{key_slot, parse_redirect, RedirectKind, SlotMap, SLOTS};
use fanout::redis::resp::Value;

#[test]
fn the_slot_map_of_a_real_cluster() {
    let cluster = RedisCluster::start();
    let seed = cluster.ports[0];
    // Replicas show up in the map once every node knows them.
    let shards = wait_for("3 primaries with a replica each", DEADLINE, || {
        let reply = command(seed, &["CLUSTER", "SHARDS"]).ok()?;
        let map = SlotMap::from_cluster_shards(&reply, "127.0.0.1").expect("CLUSTER SHARDS");
        map.ranges()
            .iter()
            .all(|r| r.replicas.len() == 1)
            .then_some(map)
    });
    assert!(shards.is_complete(), "{shards:?}");
    assert_eq!(shards.covered(), u32::from(SLOTS));
    let primaries = shards.primaries();
    assert_eq!(primaries.len(), 3, "{shards:?}");
    for p in &primaries {
        assert_eq!(p.host, "127.0.0.1");
        assert!(cluster.ports.contains(&p.port.unwrap()), "{p:?}");
    }

    let reply = command(seed, &["CLUSTER", "SLOTS"]).unwrap();
    let slots = SlotMap::from_cluster_slots(&reply, "127.0.0.1").expect("CLUSTER SLOTS");
    assert!(slots.is_complete());
    for slot in (0..SLOTS).step_by(97).chain([SLOTS - 1]) {
        assert_eq!(
            shards.primary(slot).unwrap().port,
            slots.primary(slot).unwrap().port,
            "slot {slot}"
        );
    }

    for key in [
        "foo",
        "bar",
        "chat:room:42",
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "ünïcødé",
        "",
    ] {
        let Value::Int(slot) = command(seed, &["CLUSTER", "KEYSLOT", key]).unwrap() else {
            panic!("CLUSTER KEYSLOT {key:?}: not an integer");
        };
        assert_eq!(i64::from(key_slot(key.as_bytes())), slot, "{key:?}");
    }

    // A real MOVED from a primary that does not own "foo"'s slot.
    let owner = shards.primary(key_slot(b"foo")).unwrap().port.unwrap();
    let other = primaries
        .iter()
        .map(|p| p.port.unwrap())
        .find(|&p| p != owner)
        .unwrap();
    let reply = command(other, &["GET", "foo"]).unwrap();
    let Value::Error(e) = &reply else {
        panic!("expected MOVED, got {reply:?}");
    };
    let moved = parse_redirect(e).unwrap_or_else(|| panic!("{:?}", text(&reply)));
    assert_eq!(
        (moved.kind, moved.slot, moved.port),
        (RedirectKind::Moved, 12182, owner)
    );
}
