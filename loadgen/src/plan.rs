//! The subscription plan: `SubPlan` (what a subscriber worker is told about the run) and
//! the pure arithmetic both sides agree on — which channels a connection subscribes
//! (`conn_channels`) and how publishers and channels form streams (`n_streams`,
//! `stream_of`). Data and pure functions only: no I/O, no clocks, no threads.

use crate::net::Target;

/// Everything a subscriber worker needs to know about the run.
#[derive(Debug, Clone)]
pub struct SubPlan {
    /// Server URLs; connection `gid` goes to `targets[gid % len]`.
    pub targets: Vec<Target>,
    pub prefix: String,
    pub channels: u32,
    pub subs_per_conn: u32,
    pub pubs: u32,
    pub source_addrs: u32,
    /// Connections in connect/handshake/subscribe at once, per worker.
    pub max_pending: usize,
    pub setup_deadline: u64,
    /// `--sub-path`: connect to this path (`{channel}` replaced), send no subscribe,
    /// and read raw payloads (the channel is the connection's).
    pub sub_path: Option<String>,
    /// `--compression`: offer permessage-deflate and inflate what comes compressed.
    pub deflate: bool,
}

/// Channels subscribed by global connection `gid`.
pub fn conn_channels(gid: usize, spc: u32, channels: u32) -> Vec<u32> {
    (0..spc as usize)
        .map(|m| ((gid * spc as usize + m) % channels as usize) as u32)
        .collect()
}

/// Number of streams (publisher × channel pairs): each channel has at least one
/// publisher when pubs ≥ 1, and each publisher at least one channel.
pub fn n_streams(pubs: u32, channels: u32) -> u32 {
    if pubs == 0 {
        0
    } else {
        pubs.max(channels)
    }
}

/// Stream k is published by publisher k % pubs on channel k % channels.
pub fn stream_of(p: u32, ch: u32, pubs: u32, channels: u32) -> Option<u32> {
    if pubs == 0 || p >= pubs || ch >= channels {
        return None;
    }
    if pubs >= channels {
        (p % channels == ch).then_some(p)
    } else {
        (ch % pubs == p).then_some(ch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_cover_channels_and_publishers() {
        for (pubs, channels) in [(1u32, 1u32), (1, 5), (5, 1), (4, 6), (6, 4), (3, 3)] {
            let n = n_streams(pubs, channels);
            let mut seen = std::collections::HashSet::new();
            for p in 0..pubs {
                for ch in 0..channels {
                    if let Some(k) = stream_of(p, ch, pubs, channels) {
                        assert_eq!((k % pubs, k % channels), (p, ch));
                        assert!(seen.insert(k));
                    }
                }
            }
            assert_eq!(seen.len() as u32, n, "pubs {pubs} channels {channels}");
        }
        assert_eq!(conn_channels(3, 2, 5), vec![1, 2]);
    }
}
