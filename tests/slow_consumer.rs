//! A subscriber that stops reading is dealt with by the policy, and the other
//! subscribers of the same channel are not delayed and lose nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestNode, DEADLINE};

/// The tests of this file flood nodes and measure pacing: on a 2-core machine two of
/// them at once starve each other's readers, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A raw WebSocket that subscribes and then never reads again. Its receive buffer is
/// small, so what it does not read waits in the server: the kernel's autotuned buffers
/// would otherwise absorb megabytes, a different amount for each socket, and make when
/// each reader starts to lag a matter of chance.
fn stalled_subscriber(node: &TestNode, channel: &str) -> TcpStream {
    let mut s = common::raw_upgrade_small_buffer(node.addr, 64 * 1024);
    let cmd = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
    s.write_all(&fanout::ws::inbound::client_frame(
        1,
        true,
        cmd.as_bytes(),
        [9, 8, 7, 6],
    ))
    .unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply[..n]).contains("subscribed"));
    s
}

fn metric(node: &TestNode, name: &str) -> u64 {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_stalled_reader_is_closed_with_4000_and_others_get_everything_in_time() {
    let _serial = one_at_a_time();
    let node = TestNode::start(&["--outbound-limit", "65536", "--shards", "1"]);
    let mut stalled = stalled_subscriber(&node, "flood");
    let mut good = node.client();
    good.subscribe("flood");
    let mut publisher = node.client();
    let payload = format!("\"{}\"", "z".repeat(4000));
    // ~8 MB towards a client that reads nothing; the good one reads along.
    let start = Instant::now();
    for i in 0..2000 {
        publisher.publish("flood", &payload);
        let v = good.expect_json();
        assert_eq!(v["channel"], "flood", "message {i}");
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    common::wait_for("a slow-consumer close", DEADLINE, || {
        (metric(&node, "fanout_slow_consumer_closes_total") == 1).then_some(())
    });
    // The stalled client finds a close frame 4000 after whatever was queued before.
    let mut all = Vec::new();
    let _ = stalled.read_to_end(&mut all);
    let close_at = all
        .windows(4)
        .rposition(|w| w[0] == 0x88 && w[2..4] == 4000u16.to_be_bytes());
    assert!(close_at.is_some(), "no close 4000 in {} bytes", all.len());
}

#[test]
fn drop_oldest_policy_keeps_the_connection_and_says_so_once() {
    let _serial = one_at_a_time();
    let node = TestNode::start(&[
        "--outbound-limit",
        "65536",
        "--slow-consumer",
        "drop-oldest",
    ]);
    let stalled = stalled_subscriber(&node, "flood");
    let mut publisher = node.client();
    let payload = format!("\"{}\"", "z".repeat(4000));
    // ~10 MB: more than the kernel's socket buffers can absorb, however they autotune.
    for _ in 0..2500 {
        publisher.publish("flood", &payload);
    }
    publisher.send(r#"{"type":"publish","channel":"flood","data":0,"id":"last"}"#);
    assert_eq!(publisher.expect_json()["type"], "published");
    common::wait_for("dropped frames counted", DEADLINE, || {
        (metric(&node, "fanout_slow_consumer_dropped_total") > 0).then_some(())
    });
    assert_eq!(metric(&node, "fanout_slow_consumer_closes_total"), 0);
    // stalled + publisher + the /metrics request itself: the stalled one is still open.
    assert_eq!(metric(&node, "fanout_connections"), 3);
    drop(stalled);
}

/// Reads `s` slowly (8 KiB every 5 ms). Keeps reading after `stop` until every one of
/// the `all` readers has seen a `gap` notice (counted in `gaps`), or `DEADLINE` after
/// `stop`. Returns (bytes read, saw a `gap` notice, the server closed the connection).
fn slow_reader(
    mut s: TcpStream,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    gaps: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    all: usize,
) -> (usize, bool, bool) {
    use std::sync::atomic::Ordering;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let needle = br#""type":"gap""#;
    let (mut total, mut gap, mut tail) = (0usize, false, Vec::new());
    let mut buf = vec![0u8; 8192];
    let mut stopped_at = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            if gaps.load(Ordering::Relaxed) >= all || at.elapsed() > DEADLINE {
                return (total, gap, false);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return (total, gap, true),
            Ok(n) => {
                total += n;
                tail.extend_from_slice(&buf[..n]);
                if !gap && tail.windows(needle.len()).any(|w| w == needle) {
                    gap = true;
                    gaps.fetch_add(1, Ordering::Relaxed);
                }
                let keep = tail.len().saturating_sub(needle.len());
                tail.drain(..keep);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (total, gap, true),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When a flood outruns every subscriber of a shard (kernel buffers full) while they keep
/// reading, the shard takes deliveries at their pace (at most a quarter of the outbound
/// limit between two flushes, none while most connections lag) instead of queuing them
/// until the slow-consumer policy closes everyone: the overflow is dropped at the router,
/// counted, and announced with `gap`. Without the per-flush intake budget all 40 readers
/// were closed (4000) within the flood.
///
/// Timing-sensitive: 40 reader threads at a fixed rate against a flood, on 2 cores. It
/// fails now and then (about 1 run in 8 on a quiet machine at this commit, 2 in 10 at
/// `ee7388a` before the pause got its hysteresis), because when each reader starts to
/// lag depends on the scheduler; so it is not in the default suite (a flaky suite hides
/// real failures). Run it with `cargo test --test slow_consumer -- --ignored`.
#[test]
#[ignore = "timing-sensitive (rates on 2 cores): run with --ignored, see the doc comment"]
fn lagging_readers_are_paced_not_closed_and_told_of_the_loss() {
    let _serial = one_at_a_time();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let node = TestNode::start(&["--outbound-limit", "262144", "--shards", "1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = 40;
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let s = stalled_subscriber(&node, "lag");
            let (stop, gaps) = (stop.clone(), gaps.clone());
            std::thread::spawn(move || slow_reader(s, stop, gaps, n))
        })
        .collect();
    // The publisher's own replies are drained so that it never lags itself.
    let mut publisher = common::raw_upgrade(node.addr);
    let mut drain = publisher.try_clone().unwrap();
    std::thread::spawn(move || std::io::copy(&mut drain, &mut std::io::sink()));
    let payload = format!("\"{}\"", "p".repeat(1000));
    let frame = fanout::ws::inbound::client_frame(
        1,
        true,
        format!(r#"{{"type":"publish","channel":"lag","data":{payload}}}"#).as_bytes(),
        [1, 2, 3, 4],
    );
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 64)
        .collect();
    // ~1.6 MB/s per reader of capacity against a flood far above it, for 3 seconds.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        publisher.write_all(&batch).unwrap();
    }
    let dropped = metric(&node, "fanout_dispatch_dropped_total");
    let closes = metric(&node, "fanout_slow_consumer_closes_total");
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(closes, 0, "slow readers were closed instead of paced");
    assert!(
        dropped > 0,
        "the flood exceeded the readers, so drops must be counted"
    );
    for (i, (bytes, gap, closed)) in results.iter().enumerate() {
        assert!(!closed, "reader {i} was disconnected");
        assert!(*bytes > 100_000, "reader {i} got only {bytes} bytes");
        assert!(*gap, "reader {i} was never told about the loss");
    }
}
