//! Proves the fan-out path makes no per-subscriber allocation: a counting global
//! allocator watches the whole process (server running in-process, embedded bus) while
//! one publisher sends M messages to S subscribers over real sockets. The clients here
//! read into fixed buffers, so every allocation counted is the server's. Allocations must
//! scale with M (a few per message), not with M × S.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MASK: [u8; 4] = [1, 2, 3, 4];

fn read_exactly(s: &mut TcpStream, buf: &mut [u8], n: usize) {
    let mut got = 0;
    while got < n {
        let want = (n - got).min(buf.len());
        got += s.read(&mut buf[..want]).unwrap();
    }
}

/// Reads one whole server frame (header + payload under 126 bytes) into `buf`.
fn read_frame(s: &mut TcpStream, buf: &mut [u8]) {
    read_exactly(s, buf, 2);
    let len = usize::from(buf[1] & 0x7f);
    assert!(len < 126, "a small frame");
    read_exactly(s, buf, len);
}

/// A server in this process on a free port with `args` (listen and shards filled in).
fn start(shards: usize, args: fanout::config::Args) -> fanout::server::ServerHandle {
    let args = fanout::config::Args {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(shards),
        ..args
    };
    let config = fanout::config::Config::resolve(args, None).unwrap();
    fanout::server::start(config).unwrap()
}

/// The counter is process-wide: tests in this binary measure one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn fan_out_allocates_per_message_not_per_subscriber() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const SUBS: usize = 100;
    const MSGS: usize = 200;
    let server = start(2, Default::default());
    let sub_frame =
        fanout::ws::inbound::client_frame(1, true, br#"{"type":"subscribe","channel":"a"}"#, MASK);
    let subscribed_len = 2 + r#"{"type":"subscribed","channel":"a"}"#.len();
    let mut subs: Vec<TcpStream> = (0..SUBS)
        .map(|_| common::raw_upgrade(server.local_addr))
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    for s in subs.iter_mut() {
        s.write_all(&sub_frame).unwrap();
        read_exactly(s, &mut buf, subscribed_len);
    }
    let mut publisher = common::raw_upgrade(server.local_addr);
    let mut burst = Vec::new();
    for i in 0..MSGS {
        let cmd = format!(r#"{{"type":"publish","channel":"a","data":{}}}"#, 1000 + i);
        burst.extend(fanout::ws::inbound::client_frame(
            1,
            true,
            cmd.as_bytes(),
            MASK,
        ));
    }
    let delivery_len = 2 + r#"{"channel":"a","data":1000}"#.len();
    let mut round = |subs: &mut Vec<TcpStream>| {
        publisher.write_all(&burst).unwrap();
        for s in subs.iter_mut() {
            read_exactly(s, &mut buf, delivery_len * MSGS);
        }
    };
    // Warm up: queues and buffers reach their steady-state capacity.
    round(&mut subs);
    round(&mut subs);
    let before = ALLOCS.load(Ordering::SeqCst);
    round(&mut subs);
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;
    let per_message = allocs as f64 / MSGS as f64;
    eprintln!("{allocs} allocations for {MSGS} messages × {SUBS} subscribers = {per_message:.2} per message");
    // A per-subscriber allocation would mean at least SUBS per message.
    assert!(per_message < 10.0, "{per_message} allocations per message");
    server.shutdown();
    server.join();
}

/// Allocations per message while one publisher sends `msgs` messages to every socket
/// in `subs` (after two warm-up rounds): the least of three measured rounds, since how
/// the Redis reader's reads happen to batch messages varies from run to run.
fn per_message(publisher: &mut TcpStream, subs: &mut [TcpStream], msgs: usize) -> f64 {
    let frames: Vec<Vec<u8>> = (0..msgs)
        .map(|i| {
            let cmd = format!(r#"{{"type":"publish","channel":"a","data":{}}}"#, 1000 + i);
            fanout::ws::inbound::client_frame(1, true, cmd.as_bytes(), MASK)
        })
        .collect();
    let mut buf = vec![0u8; 256];
    // One message at a time, each read by every subscriber before the next is sent: no
    // batching in the server can spread a per-subscriber cost over many messages.
    let mut round = |publisher: &mut TcpStream, subs: &mut [TcpStream]| {
        for f in &frames {
            publisher.write_all(f).unwrap();
            for s in subs.iter_mut() {
                read_frame(s, &mut buf);
            }
        }
    };
    round(publisher, subs);
    round(publisher, subs);
    (0..3)
        .map(|_| {
            let before = ALLOCS.load(Ordering::SeqCst);
            round(publisher, subs);
            let allocs = ALLOCS.load(Ordering::SeqCst) - before;
            allocs as f64 / msgs as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn subscribe_more(addr: std::net::SocketAddr, subs: &mut Vec<TcpStream>, total: usize) {
    let sub_frame =
        fanout::ws::inbound::client_frame(1, true, br#"{"type":"subscribe","channel":"a"}"#, MASK);
    let mut buf = [0u8; 256];
    while subs.len() < total {
        let mut s = common::raw_upgrade(addr);
        s.write_all(&sub_frame).unwrap();
        read_frame(&mut s, &mut buf);
        subs.push(s);
    }
}

/// Measures S=40 then S=240 subscribers on one server (2 shards), in one process, and
/// requires the per-message allocation counts to differ by less than one: a single
/// allocation per subscriber per message would add 200. Both sizes are past
/// `Tuning::local_copy_members` per shard, so both pay the same per-shard copy.
/// `at_most`: the allocations one message may cost in all (the per-turn vectors keep
/// their capacity, so a message costs its frame, its queue entries and little else;
/// with 20+ members per shard, each of the 2 shards copies the frame once and its first
/// clone allocates the copy's shared header: 3 more than without the copy).
fn allocations_do_not_grow_with_subscribers(redis: Option<String>, history: bool, at_most: f64) {
    const MSGS: usize = 100;
    let args = fanout::config::Args {
        redis,
        history_size: history.then_some(1000),
        ..Default::default()
    };
    let server = start(2, args);
    let mut publisher = common::raw_upgrade(server.local_addr);
    let mut subs = Vec::new();
    subscribe_more(server.local_addr, &mut subs, 40);
    let at_40 = per_message(&mut publisher, &mut subs, MSGS);
    subscribe_more(server.local_addr, &mut subs, 240);
    let at_240 = per_message(&mut publisher, &mut subs, MSGS);
    eprintln!("allocations per message: S=40 {at_40:.2}, S=240 {at_240:.2}");
    assert!(
        (at_240 - at_40).abs() < 1.0,
        "allocations per message grow with subscribers: S=40 {at_40:.2}, S=240 {at_240:.2}"
    );
    assert!(
        at_240 <= at_most,
        "{at_240:.2} allocations per message, more than {at_most}: a per-turn or per-channel allocation came back"
    );
    server.shutdown();
    server.join();
}

#[test]
fn embedded_bus_allocations_do_not_grow_with_subscribers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    allocations_do_not_grow_with_subscribers(None, false, 8.0);
}

/// The Redis path: the node's writer PUBLISHes to a real redis-server and every
/// delivery comes back through the Redis reader thread and the router.
#[test]
fn redis_reader_allocations_do_not_grow_with_subscribers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let redis = common::RedisProcess::start();
    allocations_do_not_grow_with_subscribers(Some(redis.url()), false, 8.0);
    // The messages really went through Redis (2 × 5 rounds of 100 PUBLISHes).
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    let publishes: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        publishes >= 1000,
        "only {publishes} PUBLISHes reached Redis"
    );
}

/// History channels: each publish is a script (XADD + PUBLISH) and each delivery
/// carries its offset inside the one shared frame; the shard's per-channel offset check
/// is per message, never per subscriber.
#[test]
fn history_channel_allocations_do_not_grow_with_subscribers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    allocations_do_not_grow_with_subscribers(None, true, 9.0);
    let redis = common::RedisProcess::start();
    allocations_do_not_grow_with_subscribers(Some(redis.url()), true, 12.0);
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        stats.contains("cmdstat_evalsha:calls="),
        "published through the script"
    );
}

/// At about one message a second per channel, a subscriber's queue is not freed and
/// allocated again for every message (it is released only after a whole quiet second):
/// allocations per message do not grow with subscribers at that rate either.
#[test]
fn slow_channels_do_not_allocate_per_subscriber() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start(1, Default::default());
    let mut publisher = common::raw_upgrade(server.local_addr);
    let mut subs = Vec::new();
    let mut buf = vec![0u8; 256];
    let mut slow_round = |publisher: &mut TcpStream, subs: &mut [TcpStream]| {
        let frame = fanout::ws::inbound::client_frame(
            1,
            true,
            br#"{"type":"publish","channel":"a","data":1}"#,
            MASK,
        );
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(700));
            publisher.write_all(&frame).unwrap();
            for s in subs.iter_mut() {
                read_frame(s, &mut buf);
            }
        }
        (ALLOCS.load(Ordering::SeqCst) - before) as f64 / 3.0
    };
    subscribe_more(server.local_addr, &mut subs, 10);
    slow_round(&mut publisher, &mut subs);
    let at_10 = slow_round(&mut publisher, &mut subs);
    subscribe_more(server.local_addr, &mut subs, 100);
    slow_round(&mut publisher, &mut subs);
    let at_100 = slow_round(&mut publisher, &mut subs);
    eprintln!("allocations per slow message: S=10 {at_10:.2}, S=100 {at_100:.2}");
    assert!(
        at_100 - at_10 < 45.0,
        "a subscriber's queue is freed and allocated per message: S=10 {at_10:.2}, S=100 {at_100:.2}"
    );
    server.shutdown();
    server.join();
}

/// A client that sends a message in many small pieces (a slow link, a client without
/// Nagle): the buffer of the partly received message keeps its capacity between reads
/// instead of being shrunk (and grown again) on every read.
#[test]
fn a_message_sent_in_pieces_does_not_allocate_per_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const PIECES: usize = 100;
    let server = start(1, Default::default());
    let mut publisher = common::raw_upgrade(server.local_addr);
    publisher.set_nodelay(true).unwrap();
    let cmd = format!(
        r#"{{"type":"publish","channel":"a","data":"{}","id":1}}"#,
        "x".repeat(4000)
    );
    let frame = fanout::ws::inbound::client_frame(1, true, cmd.as_bytes(), MASK);
    let piece = frame.len().div_ceil(PIECES);
    let mut buf = vec![0u8; 256];
    let mut send_in_pieces = |publisher: &mut TcpStream| {
        let before = ALLOCS.load(Ordering::SeqCst);
        for chunk in frame.chunks(piece) {
            publisher.write_all(chunk).unwrap();
            // Long enough for the shard to read each piece on its own.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        read_frame(publisher, &mut buf); // the `published` ack
        ALLOCS.load(Ordering::SeqCst) - before
    };
    send_in_pieces(&mut publisher);
    let allocs = send_in_pieces(&mut publisher);
    eprintln!("{allocs} allocations for one message sent in {PIECES} pieces");
    assert!(
        allocs < 40,
        "{allocs} allocations for one message in {PIECES} pieces: the partial-message buffer is reallocated per read"
    );
    server.shutdown();
    server.join();
}
