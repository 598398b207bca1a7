//! A Redis host name → address without blocking the caller: an IP literal at once, a
//! name on a short-lived thread (`getaddrinfo` blocks, for seconds when DNS is down)
//! whose answer the caller polls on its next turns. Owns one lookup at a time; never
//! blocks, never decides when to connect.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// What a look-up gave.
pub enum Lookup {
    Ready(io::Result<SocketAddr>),
    /// Still resolving: ask again on a later turn.
    Pending,
}

#[derive(Default)]
pub struct Resolver {
    pending: Option<(Receiver<io::Result<SocketAddr>>, Instant)>,
}

impl Resolver {
    /// The address of `host:port`, or `Pending` while a name is being resolved (given
    /// up after `limit`).
    pub fn lookup(&mut self, host: &str, port: u16, now: Instant, limit: Duration) -> Lookup {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Lookup::Ready(Ok(SocketAddr::new(ip, port)));
        }
        let Some((rx, since)) = &self.pending else {
            let (tx, rx) = mpsc::channel();
            let name = host.to_string();
            let spawned = std::thread::Builder::new()
                .name("fanout-resolve".into())
                .spawn(move || {
                    let _ = tx.send(resolve(&name, port));
                });
            if let Err(e) = spawned {
                return Lookup::Ready(Err(e));
            }
            self.pending = Some((rx, now));
            return Lookup::Pending;
        };
        let answer = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) if now.duration_since(*since) < limit => {
                return Lookup::Pending
            }
            // The thread ends by itself whenever the lookup returns.
            Err(TryRecvError::Empty) => Err(io::Error::new(
                ErrorKind::TimedOut,
                "resolving the Redis host timed out",
            )),
            Err(TryRecvError::Disconnected) => Err(io::Error::other("resolver thread died")),
        };
        self.pending = None;
        Lookup::Ready(answer)
    }

    /// A look-up is in flight (the caller should look again soon).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "Redis host has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_at_once_names_later() {
        let mut r = Resolver::default();
        let now = Instant::now();
        let limit = Duration::from_secs(5);
        match r.lookup("127.0.0.1", 6379, now, limit) {
            Lookup::Ready(Ok(a)) => assert_eq!(a, "127.0.0.1:6379".parse().unwrap()),
            _ => panic!("an IP literal resolves at once"),
        }
        assert!(matches!(
            r.lookup("localhost", 6379, now, limit),
            Lookup::Pending
        ));
        let end = Instant::now() + limit;
        loop {
            match r.lookup("localhost", 6379, Instant::now(), limit) {
                Lookup::Pending if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Lookup::Ready(Ok(a)) => {
                    assert_eq!(a.port(), 6379);
                    break;
                }
                _ => panic!("localhost did not resolve"),
            }
        }
        assert!(!r.is_pending());
    }
}
