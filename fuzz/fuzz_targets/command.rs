//! Fuzzes the client-command parser: any text, never a panic; accepted channels are valid.
#![no_main]
use fanout::protocol::{parse_command, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_command(text, 256) {
        Ok(Command::Subscribe { channel }) | Ok(Command::Unsubscribe { channel }) => {
            assert!(fanout::protocol::channel::validate(&channel, 256).is_ok());
        }
        Ok(Command::Publish { channel, data, .. }) => {
            assert!(fanout::protocol::channel::validate(&channel, 256).is_ok());
            assert!(fanout::protocol::json::is_valid(data.as_bytes()));
        }
        _ => {}
    }
});
