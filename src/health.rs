//! The node's health flags: written by the Redis threads (subscriber up, publisher up,
//! probe answered), read by `/healthz` and by shards deciding whether a publish can be
//! taken. Relaxed atomics, no lock; never does I/O.

use std::sync::atomic::{AtomicBool, Ordering};

/// Health as the broker threads see it.
#[derive(Debug, Default)]
pub struct Health {
    /// The Redis subscriber connection is up and subscriptions are restored.
    pub subscriber_ok: AtomicBool,
    /// The Redis publisher connection is up.
    pub publisher_ok: AtomicBool,
    /// The last end-to-end probe came back in time.
    pub probe_ok: AtomicBool,
    /// Redis refused the node's credentials (AUTH/SELECT) on its last try.
    pub auth_refused: AtomicBool,
    /// The last TLS handshake with Redis failed (certificate, CA, host name, protocol).
    pub tls_failed: AtomicBool,
    /// `--redis-insecure`: Redis's certificate is not verified (said on `/healthz`).
    pub tls_unverified: AtomicBool,
}

impl Health {
    /// (healthy, reason) for `/healthz`.
    pub fn status(&self, cluster: bool) -> (bool, &'static str) {
        if !cluster {
            return (true, "embedded");
        }
        if self.tls_failed.load(Ordering::Relaxed) {
            (
                false,
                "redis TLS handshake failed: check --redis-ca, the host name in the URL and the server certificate (see the log)",
            )
        } else if self.auth_refused.load(Ordering::Relaxed) {
            (
                false,
                "redis refused our credentials (AUTH/SELECT): check the user and password",
            )
        } else if !self.subscriber_ok.load(Ordering::Relaxed) {
            (false, "redis subscriber down")
        } else if !self.publisher_ok.load(Ordering::Relaxed) {
            (false, "redis publisher down")
        } else if !self.probe_ok.load(Ordering::Relaxed) {
            (false, "redis pub/sub probe failing")
        } else if self.tls_unverified.load(Ordering::Relaxed) {
            (
                true,
                "redis, TLS certificate NOT verified (--redis-insecure: for tests only)",
            )
        } else {
            (true, "redis")
        }
    }
}
