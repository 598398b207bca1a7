//! Known vectors of the Redis Cluster spec, slot maps from hand-built replies, and
//! arbitrary replies that must give an error, never a panic.

use bytes::Bytes;

use super::*;

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn arr(v: Vec<Value>) -> Value {
    Value::Array(v)
}

#[test]
fn crc16_is_xmodem() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(crc16(b""), 0);
}

#[test]
fn slots_of_known_keys() {
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(key_slot(b"hello"), 866);
    assert_eq!(key_slot(b""), 0);
    assert_eq!(
        key_slot(b"{user1000}.following"),
        key_slot(b"{user1000}.followers")
    );
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
}

#[test]
fn hash_tags_follow_the_spec() {
    // The first { and the first } after it; an empty tag hashes the whole key.
    assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
    assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
    assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
    assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    assert_eq!(hash_tag(b"{}"), b"{}");
    assert_eq!(hash_tag(b"no tag"), b"no tag");
    assert_eq!(hash_tag(b"open{only"), b"open{only");
    assert_eq!(hash_tag(b"close}only{"), b"close}only{");
    assert_eq!(hash_tag(b"}{x}"), b"x");
}

fn slots_node(host: &str, port: i64, id: &str) -> Value {
    arr(vec![bulk(host), Value::Int(port), bulk(id), arr(vec![])])
}

#[test]
fn cluster_slots_reply() {
    let reply = arr(vec![
        arr(vec![
            Value::Int(5461),
            Value::Int(10922),
            slots_node("10.0.0.2", 7001, "b"),
            slots_node("10.0.0.5", 7004, "e"),
        ]),
        arr(vec![
            Value::Int(0),
            Value::Int(5460),
            slots_node("", 7000, "a"),
            slots_node("10.0.0.4", 7003, "d"),
        ]),
        arr(vec![
            Value::Int(10923),
            Value::Int(16383),
            slots_node("?", 7002, "c"),
        ]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "seed.local").unwrap();
    assert!(map.is_complete());
    assert_eq!(map.ranges().len(), 3);
    assert_eq!(map.ranges()[0].start, 0, "sorted");
    let p = map.primary(key_slot(b"foo")).unwrap();
    assert_eq!((p.host.as_str(), p.port), ("seed.local", Some(7002)));
    let r = map.range(0).unwrap();
    assert_eq!(
        r.primary.host, "seed.local",
        "an empty host is the asked one"
    );
    assert_eq!(r.replicas[0].port, Some(7003));
    assert_eq!(map.primary(5461).unwrap().id.as_deref(), Some("b"));
    assert_eq!(map.primary(10922).unwrap().id.as_deref(), Some("b"));
    assert_eq!(map.primaries().len(), 3);
}

#[test]
fn incomplete_and_overlapping_maps() {
    let one = |a, b| {
        arr(vec![
            Value::Int(a),
            Value::Int(b),
            slots_node("h", 1, &format!("{a}")),
        ])
    };
    let map = SlotMap::from_cluster_slots(&arr(vec![one(0, 99), one(200, 300)]), "x").unwrap();
    assert!(!map.is_complete());
    assert_eq!(map.covered(), 100 + 101);
    assert!(map.primary(150).is_none());
    assert!(map.primary(16383).is_none());
    assert_eq!(map.primary(300).unwrap().id.as_deref(), Some("200"));
    assert!(SlotMap::from_cluster_slots(&arr(vec![one(0, 100), one(100, 200)]), "x").is_err());
    assert!(SlotMap::from_cluster_slots(&arr(vec![one(5, 4)]), "x").is_err());
    assert!(SlotMap::from_cluster_slots(&arr(vec![one(0, 16384)]), "x").is_err());
    assert!(SlotMap::from_cluster_slots(&arr(vec![one(-1, 3)]), "x").is_err());
    assert!(SlotMap::from_cluster_slots(&arr(vec![]), "x")
        .unwrap()
        .ranges()
        .is_empty());
}

fn shard_node(id: &str, role: &str, health: &str, port: i64, tls: Option<i64>) -> Value {
    let mut kv = vec![
        bulk("id"),
        bulk(id),
        bulk("port"),
        Value::Int(port),
        bulk("ip"),
        bulk("10.0.0.9"),
        bulk("endpoint"),
        bulk(if id == "q" { "?" } else { "node.local" }),
        bulk("role"),
        bulk(role),
        bulk("replication-offset"),
        Value::Int(42),
        bulk("health"),
        bulk(health),
    ];
    if let Some(t) = tls {
        kv.extend([bulk("tls-port"), Value::Int(t)]);
    }
    arr(kv)
}

fn shard(slots: Vec<i64>, nodes: Vec<Value>) -> Value {
    arr(vec![
        bulk("slots"),
        arr(slots.into_iter().map(Value::Int).collect()),
        bulk("nodes"),
        arr(nodes),
    ])
}

#[test]
fn cluster_shards_reply() {
    let reply = arr(vec![
        shard(
            vec![0, 5460, 10923, 10923],
            vec![
                shard_node("a", "master", "online", 7000, Some(8000)),
                shard_node("d", "replica", "online", 7003, None),
            ],
        ),
        // Slot numbers as strings are read too.
        arr(vec![
            bulk("slots"),
            arr(vec![bulk("5461"), bulk("10922")]),
            bulk("nodes"),
            arr(vec![
                shard_node("b", "master", "failed", 7001, None),
                shard_node("q", "master", "online", 7004, None),
            ]),
        ]),
        shard(
            vec![10924, 16383],
            vec![shard_node("c", "master", "online", 7002, None)],
        ),
        // A shard without slots (a new, empty primary) is not in the map.
        shard(
            vec![],
            vec![shard_node("e", "master", "online", 7005, None)],
        ),
    ]);
    let map = SlotMap::from_cluster_shards(&reply, "seed").unwrap();
    assert!(map.is_complete());
    assert_eq!(map.ranges().len(), 4);
    let a = map.primary(10923).unwrap();
    assert_eq!(a.id.as_deref(), Some("a"));
    assert_eq!(
        (a.port_for(true), a.port_for(false)),
        (Some(8000), Some(7000))
    );
    assert_eq!(map.range(0).unwrap().replicas[0].id.as_deref(), Some("d"));
    // The failed primary loses to its promoted replica; `?` falls back to the ip.
    let b = map.primary(6000).unwrap();
    assert_eq!((b.id.as_deref(), b.host.as_str()), (Some("q"), "10.0.0.9"));
    assert_eq!(map.primaries().len(), 3);
    assert_eq!(map.primary(16383).unwrap().host, "node.local");
}

#[test]
fn broken_cluster_shards_replies_are_errors() {
    let odd = arr(vec![shard(
        vec![0, 5, 9],
        vec![shard_node("a", "master", "online", 1, None)],
    )]);
    assert!(SlotMap::from_cluster_shards(&odd, "x").is_err());
    let no_master = arr(vec![shard(
        vec![0, 5],
        vec![shard_node("a", "replica", "online", 1, None)],
    )]);
    assert!(SlotMap::from_cluster_shards(&no_master, "x").is_err());
    let no_port = arr(vec![shard(
        vec![0, 5],
        vec![arr(vec![bulk("role"), bulk("master")])],
    )]);
    assert!(SlotMap::from_cluster_shards(&no_port, "x").is_err());
    assert!(SlotMap::from_cluster_shards(&bulk("nope"), "x").is_err());
    assert!(SlotMap::from_cluster_shards(&arr(vec![Value::Int(1)]), "x").is_err());
}

#[test]
fn redirections() {
    assert_eq!(
        parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
        Some(Redirect {
            kind: RedirectKind::Moved,
            slot: 3999,
            host: "127.0.0.1".into(),
            port: 6381
        })
    );
    let ask = parse_redirect(b"ASK 12182 :7002").unwrap();
    assert_eq!(
        (ask.kind, ask.slot, ask.host.as_str(), ask.port),
        (RedirectKind::Ask, 12182, "", 7002)
    );
    let v6 = parse_redirect(b"MOVED 1 ::1:7000").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", 7000));
    let host = parse_redirect(b"MOVED 0 redis-1.example:6379").unwrap();
    assert_eq!(host.host, "redis-1.example");
    for bad in [
        &b"ERR unknown command"[..],
        b"MOVED",
        b"MOVED 16384 h:1",
        b"MOVED x h:1",
        b"MOVED 1 h",
        b"MOVED 1 h:0",
        b"MOVED 1 h:99999",
        b"MOVED 1 h:1 extra",
        b"ASK -1 h:1",
        b"\xff\xfe",
        b"",
    ] {
        assert_eq!(
            parse_redirect(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A small deterministic generator of arbitrary replies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn value(&mut self, depth: u32) -> Value {
        const WORDS: [&str; 12] = [
            "slots", "nodes", "port", "tls-port", "ip", "endpoint", "role", "master", "health",
            "failed", "id", "",
        ];
        match self.next() % if depth == 0 { 3 } else { 5 } {
            0 => Value::Int((self.next() % 40_000) as i64 - 20_000),
            1 => bulk(WORDS[(self.next() % 12) as usize]),
            2 => bulk(&(self.next() % 20_000).to_string()),
            _ => {
                let n = self.next() % 6;
                arr((0..n).map(|_| self.value(depth - 1)).collect())
            }
        }
    }
}

#[test]
fn arbitrary_replies_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let v = rng.value(5);
        let _ = SlotMap::from_cluster_shards(&v, "h");
        let _ = SlotMap::from_cluster_slots(&v, "h");
        let bytes: Vec<u8> = (0..rng.next() % 24).map(|_| rng.next() as u8).collect();
        let _ = parse_redirect(&bytes);
        let _ = key_slot(&bytes);
    }
}
