//! The connection loop the tests' fake servers share: read at most one message (the
//! socket has a short read timeout), let the server answer a text message, then write
//! every delivery waiting for this connection.

use std::net::TcpStream;
use std::sync::mpsc::Receiver;

use tungstenite::{Message, WebSocket};

/// One turn of a fake server's connection. `on_text` gets the socket (to answer) and
/// the text of a message. False once the connection is over.
pub fn turn(
    ws: &mut WebSocket<TcpStream>,
    rx: &Receiver<String>,
    on_text: impl FnOnce(&mut WebSocket<TcpStream>, &str),
) -> bool {
    match ws.read() {
        Ok(Message::Text(t)) => on_text(ws, t.as_str()),
        Ok(Message::Close(_)) => {
            let _ = ws.flush();
            return false;
        }
        Ok(_) => {}
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Err(_) => return false,
    }
    while let Ok(m) = rx.try_recv() {
        if ws.write(Message::text(m)).is_err() {
            return false;
        }
    }
    ws.flush().is_ok()
}
