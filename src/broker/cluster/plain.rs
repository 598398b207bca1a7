//! How the cluster writer writes a publish on a channel without history: a one-line
//! script that calls `SPUBLISH` with the channel as its key, never a bare `SPUBLISH`
//! while the cluster is up. A replica runs a bare `SPUBLISH` itself and forwards it to
//! its primary over the cluster bus, with no order against what that primary is sent
//! directly: after a failover the demoted primary, still named by a map that is not
//! yet fresh, took publishes that reached the new primary's subscribers after later
//! ones (`98, 99, 100, 97`), or twice. A script with a key is refused by a replica
//! (`-MOVED`), so only the primary by its own account publishes, and the writer's
//! `Fence` keeps the slot's order through the redirection. While the cluster is down
//! Redis refuses scripts with keys (`-CLUSTERDOWN`) but not sharded pub/sub, so the
//! writer then sends the bare form. Encoding only: no I/O, no choice of node.

use bytes::BytesMut;

use crate::redis::resp;

/// `SPUBLISH` of ARGV[1] on the channel KEYS[1].
pub const SCRIPT: &str = "return redis.call('SPUBLISH', KEYS[1], ARGV[1])";

/// `SCRIPT LOAD` of `SCRIPT` (first on every connection, again after `NOSCRIPT`).
pub fn encode_load(out: &mut BytesMut) {
    resp::encode(out, &[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]);
}

/// A publish of `payload` on `channel`: `EVALSHA` of `SCRIPT` (its SHA1 `sha`), or a
/// bare `SPUBLISH` when `sha` is `None` (the cluster is down).
pub fn encode(out: &mut BytesMut, sha: Option<&str>, channel: &str, payload: &[u8]) {
    match sha {
        Some(sha) => {
            let args: [&[u8]; 5] = [
                b"EVALSHA",
                sha.as_bytes(),
                b"1",
                channel.as_bytes(),
                payload,
            ];
            resp::encode(out, &args);
        }
        None => resp::encode(out, &[b"SPUBLISH", channel.as_bytes(), payload]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::redis::history::sha;

    #[test]
    fn a_plain_publish_names_its_channel_as_a_key_so_only_the_primary_runs_it() {
        let sha = sha(SCRIPT);
        let mut out = BytesMut::new();
        encode(&mut out, Some(&sha), "room:0", b"{\"n\":1}");
        let expected = format!(
            "*5\r\n$7\r\nEVALSHA\r\n$40\r\n{sha}\r\n$1\r\n1\r\n$6\r\nroom:0\r\n$7\r\n{{\"n\":1}}\r\n"
        );
        assert_eq!(&out[..], expected.as_bytes());
        // The cluster is down: the bare form, which Redis still takes.
        out.clear();
        encode(&mut out, None, "room:0", b"x");
        assert_eq!(
            &out[..],
            b"*3\r\n$8\r\nSPUBLISH\r\n$6\r\nroom:0\r\n$1\r\nx\r\n"
        );
    }
}
