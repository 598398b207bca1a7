//! Fuzzes the HTTP request-head parser: any bytes, never a panic, limits respected.
#![no_main]
use fanout::ws::handshake::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Parsed::Request(head) = parse(data, 8192) {
        assert!(head.head_len <= data.len());
        assert!(head.head_len <= 8192);
    }
});
