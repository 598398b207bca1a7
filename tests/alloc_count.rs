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

#[test]
fn fan_out_allocates_per_message_not_per_subscriber() {
    const SUBS: usize = 100;
    const MSGS: usize = 200;
    let args = fanout::config::Args {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(2),
        ..Default::default()
    };
    let config = fanout::config::Config::resolve(args, None).unwrap();
    let server = fanout::server::start(config).unwrap();
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
