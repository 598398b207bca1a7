//! Heap bytes an idle subscribed connection costs the server, counted exactly by a
//! counting global allocator (live bytes = allocated − freed) while the server runs
//! in-process. This is the deterministic half of the "KiB per connection" figure that
//! `loadgen conns` measures as RSS (docs/benchmarks.md).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MASK: [u8; 4] = [1, 2, 3, 4];

fn subscribed_client(addr: std::net::SocketAddr, channel: usize, buf: &mut [u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(common::UPGRADE_REQUEST).unwrap();
    let cmd = format!(r#"{{"type":"subscribe","channel":"c{channel}"}}"#);
    s.write_all(&fanout::ws::inbound::client_frame(
        1,
        true,
        cmd.as_bytes(),
        MASK,
    ))
    .unwrap();
    // 101 response, then the subscribed reply.
    let mut seen = Vec::new();
    while !seen.windows(10).any(|w| w == b"subscribed") {
        let n = s.read(buf).unwrap();
        assert!(n > 0, "server closed");
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

fn live_heap_per_connection(presence: &str) -> f64 {
    const CONNS: usize = 1000;
    let args = fanout::config::Args {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(2),
        presence: Some(if presence == "on" {
            fanout::config::OnOff::On
        } else {
            fanout::config::OnOff::Off
        }),
        ..Default::default()
    };
    let config = fanout::config::Config::resolve(args, None).unwrap();
    let server = fanout::server::start(config).unwrap();
    let mut buf = vec![0u8; 4096];
    let connections = || server.metrics.total(|s| &s.connections);
    // Warm up with as many connections as will be measured, then close them: the slab
    // and hash tables keep their capacity, so the measured delta is what each
    // connection allocates for itself (its slab slot is added below).
    let warm: Vec<TcpStream> = (0..CONNS)
        .map(|i| subscribed_client(server.local_addr, i % 100, &mut buf))
        .collect();
    drop(warm);
    // Closes, presence updates and the release of idle queues (after a whole quiet
    // second, checked once a second: within 2 s) happen asynchronously: wait until the
    // live-heap count has not moved for over two seconds.
    let settle = |what: &str, want_conns: u64| {
        let end = Instant::now() + Duration::from_secs(20);
        let (mut last, mut stable) = (LIVE.load(Ordering::SeqCst), 0);
        loop {
            std::thread::sleep(Duration::from_millis(300)); // sampling interval of a gauge
            let now = LIVE.load(Ordering::SeqCst);
            assert!(Instant::now() < end, "{what}: heap never settled");
            stable = if now == last && connections() == want_conns {
                stable + 1
            } else {
                0
            };
            if stable >= 8 {
                return now;
            }
            last = now;
        }
    };
    let before = settle("before", 0);
    let mut clients: Vec<TcpStream> = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        clients.push(subscribed_client(server.local_addr, i % 100, &mut buf));
    }
    let after = settle("after", CONNS as u64);
    let slot = std::mem::size_of::<fanout::shard::conn::Conn>() + 8;
    let per_conn = (after - before) as f64 / CONNS as f64 + slot as f64;
    eprintln!("presence {presence}: {per_conn:.0} heap bytes per idle subscribed connection");
    drop(clients);
    server.shutdown();
    server.join();
    per_conn
}

#[test]
fn an_idle_subscribed_connection_costs_little_heap() {
    // The client side (the TcpStreams, in a Vec reserved up front) allocates nothing
    // per connection while measuring.
    let off = live_heap_per_connection("off");
    let on = live_heap_per_connection("on");
    assert!(off < 220.0, "{off} bytes per connection without presence");
    assert!(on < 300.0, "{on} bytes per connection with presence");
}
