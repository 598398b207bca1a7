//! Fuzzes permessage-deflate: the negotiation of an arbitrary `Sec-WebSocket-Extensions`
//! value, and the frame decoder on a deflate connection (RSV1 frames inflated, bounded):
//! never a panic, never consumes more than it was given, never inflates past the limit.
#![no_main]
use fanout::ws::deflate::negotiate;
use fanout::ws::inbound::{Flow, Inbound, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = std::str::from_utf8(data) {
        if let Some(agreed) = negotiate([header]) {
            assert!((8..=15).contains(&agreed.bits));
        }
    }
    let mut pending = data.to_vec();
    let len = pending.len();
    let result = Inbound::default().feed_ext(&mut pending, 1024, true, &mut |m| {
        if let Message::Text(t) = m {
            assert!(t.len() <= 1024);
        }
        if let Message::Binary(b) = m {
            assert!(b.len() <= 1024);
        }
        Flow::Continue
    });
    if let Ok(used) = result {
        assert!(used <= len);
    }
});
