//! Limits against abuse that need memory of their own: WebSocket connections per client
//! address and per authenticated user (counted across the node's shards, so one table
//! each behind a lock, touched only on an upgrade, an authentication and a close) and
//! each connection's publish token bucket; and `Admission`, the checks of an upgrade
//! and an authentication (origin aside: see `api.rs`) against them and the token
//! verifier. Counting and deciding only: every refusal is counted here, the shard
//! answers it; it never writes to a socket.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use parking_lot::Mutex;

use crate::api::Refusal;
use crate::auth::Grant;
use crate::config::Limits;
use crate::metrics::ShardMetrics;
use crate::ws::handshake::RequestHead;

/// Open WebSocket connections per key (a client address, a user) on this node.
#[derive(Debug)]
pub struct PerKey<K> {
    counts: Mutex<HashMap<K, u32>>,
}

/// Connections per client address.
pub type PerIp = PerKey<IpAddr>;
/// Connections per authenticated user (`sub`).
pub type PerUser = PerKey<Box<str>>;

impl<K> Default for PerKey<K> {
    fn default() -> Self {
        PerKey {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    /// Counts one more connection of `ip` unless it already has `max`.
    pub fn acquire(&self, ip: K, max: u32) -> bool {
        let mut counts = self.counts.lock();
        let n = counts.entry(ip.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// One connection of `ip` closed.
    pub fn release(&self, ip: &K) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(ip);
            }
        }
    }

    /// Addresses with an open connection (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.counts.lock().len()
    }
}

/// Who may connect and as whom: the node-wide per-address and per-user counts, and the
/// token verifier (`None`: auth off). Shared by the node's shards.
pub struct Admission {
    pub per_ip: std::sync::Arc<PerIp>,
    pub per_user: std::sync::Arc<PerUser>,
    pub auth: Option<std::sync::Arc<crate::auth::Verifier>>,
}

impl Admission {
    /// With auth on, a token on the upgrade (`?token=` or `Authorization: Bearer`) is
    /// verified now: valid, the connection opens authenticated; invalid, 401 (counted).
    /// Without one the connection opens and must send an auth message. `echo`: the
    /// echo endpoint, never authenticated.
    pub fn upgrade_token(
        &self,
        m: &ShardMetrics,
        head: &RequestHead,
        echo: bool,
    ) -> Result<Option<Grant>, Refusal> {
        let Some(verifier) = self.auth.as_ref().filter(|_| !echo) else {
            return Ok(None);
        };
        let token = match crate::api::query_value(head.query.as_deref(), "token") {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => return Err(refused(m, 401, "invalid token")),
            None => head.bearer.clone(),
        };
        let Some(token) = token else {
            return Ok(None);
        };
        match verifier.verify(&token, crate::auth::unix_now()) {
            Ok(grant) => Ok(Some(grant)),
            Err(_) => Err(refused(m, 401, "invalid token")),
        }
    }

    /// `--max-conns-per-ip`: counts the connection on `stream` under its client address
    /// (kept in `held`), or refuses it (429, counted).
    pub fn admit_ip(
        &self,
        limits: &Limits,
        m: &ShardMetrics,
        stream: &TcpStream,
        held: &mut Option<Box<ConnLimits>>,
    ) -> Result<(), Refusal> {
        let max = limits.max_conns_per_ip;
        if max == 0 {
            return Ok(());
        }
        let Ok(ip) = stream.peer_addr().map(|a| a.ip()) else {
            return Ok(()); // the peer is already gone; the close will follow
        };
        if !self.per_ip.acquire(ip, max) {
            return Err(refused(m, 429, "too many connections from this address"));
        }
        held.get_or_insert_with(Default::default).ip = Some(ip);
        Ok(())
    }

    /// `--max-conns-per-user`: counts the connection under its authenticated user (kept
    /// in `held`), or refuses it (counted; the caller answers). A refused connection is
    /// closed, which releases whatever else it was counted under.
    pub fn admit_user(
        &self,
        limits: &Limits,
        m: &ShardMetrics,
        sub: &str,
        held: &mut Option<Box<ConnLimits>>,
    ) -> bool {
        let max = limits.max_conns_per_user;
        if max == 0 {
            return true;
        }
        if !self.per_user.acquire(sub.into(), max) {
            refused(m, 429, "too many connections for this user");
            return false;
        }
        held.get_or_insert_with(Default::default).user = Some(sub.into());
        true
    }

    /// A connection closed: it no longer counts under its address and user.
    pub fn release(&self, held: Option<&ConnLimits>) {
        let Some(held) = held else {
            return;
        };
        if let Some(ip) = &held.ip {
            self.per_ip.release(ip);
        }
        if let Some(user) = &held.user {
            self.per_user.release(user);
        }
    }
}

/// Counts a refused upgrade.
pub fn refused(m: &ShardMetrics, status: u16, why: &'static str) -> Refusal {
    m.upgrades_refused.fetch_add(1, Ordering::Relaxed);
    (status, why)
}

/// A connection's publish allowance: `rate` per second, bursts of `rate`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// Thousandths of a publish left.
    milli: u64,
    /// When the bucket was last refilled, in milliseconds of the shard clock.
    at_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: u32, now_ms: u64) -> Bucket {
        Bucket {
            milli: u64::from(rate) * 1000,
            at_ms: now_ms,
        }
    }

    /// Takes one publish at `now_ms`; false when none is left.
    pub fn take(&mut self, rate: u32, now_ms: u64) -> bool {
        let cap = u64::from(rate) * 1000;
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = cap.min(self.milli + elapsed.saturating_mul(u64::from(rate)));
        self.at_ms = now_ms;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// What a connection carries when a per-client limit is on (boxed: nothing otherwise).
#[derive(Debug, Default)]
pub struct ConnLimits {
    /// Counted in `PerIp` under this address.
    pub ip: Option<IpAddr>,
    /// Counted in `PerUser` under this user.
    pub user: Option<Box<str>>,
    pub bucket: Option<Bucket>,
    /// History reads asked by the client (`history`, `subscribe` with `since`).
    pub history: Option<Bucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_up_to_the_limit_and_forgets_released_addresses() {
        let t = PerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert!(t.acquire(a, 2) && t.acquire(a, 2));
        assert!(!t.acquire(a, 2), "third from a");
        assert!(t.acquire(b, 2), "b is counted apart");
        t.release(&a);
        assert!(t.acquire(a, 2), "a freed one");
        t.release(&a);
        t.release(&a);
        t.release(&b);
        assert_eq!(t.addresses(), 0);
        assert!(!t.acquire(a, 0) && t.addresses() == 0, "0 admits nobody");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::full(5, 0);
        assert_eq!((0..10).filter(|_| b.take(5, 0)).count(), 5, "burst of 5");
        assert!(!b.take(5, 100), "half a publish after 100 ms");
        assert!(b.take(5, 200), "one after 200 ms");
        assert_eq!(
            (0..10).filter(|_| b.take(5, 60_000)).count(),
            5,
            "capped at 5"
        );
    }
}
