//! SIGTERM: stop accepting, close every client with 1001, exit 0 within the timeout.

mod common;

use std::time::Duration;

use common::{TestNode, DEADLINE};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

#[test]
fn sigterm_closes_clients_with_1001_and_exits_cleanly() {
    let mut node = TestNode::start(&["--shards", "2", "--shutdown-timeout", "3"]);
    let addr = node.addr;
    let mut clients: Vec<_> = (0..20).map(|_| node.client()).collect();
    for c in clients.iter_mut() {
        c.subscribe("bye");
    }
    let status = node.terminate(Duration::from_secs(6));
    assert!(status.success(), "exit status {status:?}");
    for c in clients.iter_mut() {
        match c.recv_message(DEADLINE) {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting"
    );
}
