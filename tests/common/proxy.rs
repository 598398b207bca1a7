//! A TCP proxy between a node and Redis (std threads) that can stop forwarding the
//! Redis→node bytes of one connection while keeping it open: a "deaf" subscriber.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One proxied connection: the proxy's own upstream address (what Redis's `CLIENT LIST`
/// shows as `addr=`), and whether Redis→node bytes are being dropped.
struct Link {
    upstream_local: SocketAddr,
    deaf: Arc<AtomicBool>,
}

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Link>>>,
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let l = links.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // Redis down: the node sees the connection close
                };
                let deaf = Arc::new(AtomicBool::new(false));
                l.lock().unwrap().push(Link {
                    upstream_local: up.local_addr().unwrap(),
                    deaf: deaf.clone(),
                });
                pump(
                    down.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                    Arc::default(),
                );
                pump(up, down, deaf);
            }
        });
        Proxy { port, links }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// How many connections the proxy has accepted and forwarded so far.
    pub fn connections(&self) -> usize {
        self.links.lock().unwrap().len()
    }

    /// Stops forwarding Redis→node bytes on the connection whose upstream side has
    /// local address `addr` (as Redis's `CLIENT LIST` reports it); the bytes are read
    /// and dropped, the connection stays open. Panics if no such connection.
    pub fn make_deaf(&self, addr: &str) {
        let links = self.links.lock().unwrap();
        let link = links
            .iter()
            .find(|l| l.upstream_local.to_string() == addr)
            .unwrap_or_else(|| panic!("no proxied connection from {addr}"));
        link.deaf.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` → `to` until either side closes; while `deaf`, reads and drops.
fn pump(mut from: TcpStream, mut to: TcpStream, deaf: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if deaf.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
