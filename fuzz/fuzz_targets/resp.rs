//! Fuzzes the RESP decoder: any bytes, never a panic, decoded values consume input.
#![no_main]
use bytes::BytesMut;
use fanout::redis::resp::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = decode(&mut buf) {}
});
