//! Fuzzes the WebSocket frame decoder, feeding the input in two chunks as a socket
//! would: never a panic, never consumes more than it was given.
#![no_main]
use fanout::ws::inbound::{Flow, Inbound};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let mut inbound = Inbound::default();
    let mut pending = data[1..split.max(1)].to_vec();
    let rest = &data[split.max(1)..];
    for chunk in [None, Some(rest)] {
        if let Some(more) = chunk {
            pending.extend_from_slice(more);
        }
        let len = pending.len();
        match inbound.feed(&mut pending, 1024, &mut |_| Flow::Continue) {
            Ok(used) => {
                assert!(used <= len);
                pending.drain(..used);
            }
            Err(_) => return,
        }
    }
});
