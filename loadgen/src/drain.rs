//! When a subscriber worker may stop draining, and what is still in flight when it
//! stops: pure functions over a connection's sequence trackers and the publisher's
//! final per-stream figures (`Published`), shared by `subs` and its tests.

use crate::seq::Tracker;

/// What the publisher sent on one stream: sequence numbers `lo..hi` were published
/// inside the measured window, `0..total` in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub lo: u64,
    pub hi: u64,
    pub total: u64,
}

/// Flatten for the FIN line to child processes: `lo, hi, total` per stream.
pub fn flatten(v: &[Published]) -> Vec<u64> {
    v.iter().flat_map(|p| [p.lo, p.hi, p.total]).collect()
}

pub fn unflatten(v: &[u64]) -> Vec<Published> {
    v.chunks_exact(3)
        .map(|c| Published {
            lo: c[0],
            hi: c[1],
            total: c[2],
        })
        .collect()
}

/// The streams on channel `ch`: (tracker index within the channel slot, stream id),
/// as `subs` indexes them (`stream_of` in `plan`).
pub fn streams_of_channel(ch: u32, pubs: u32, channels: u32) -> Vec<(usize, u32)> {
    if pubs == 0 {
        return Vec::new();
    }
    if pubs >= channels {
        (ch..pubs)
            .step_by(channels as usize)
            .map(|p| ((p / channels) as usize, p))
            .collect()
    } else {
        vec![(0, ch)]
    }
}

/// Whether one connection has every message of every stream it subscribes (duplicates
/// and foreign deliveries do not help: only the trackers count).
pub fn conn_complete(
    chans: &[u32],
    trk: &[Vec<Tracker>],
    published: &[Published],
    pubs: u32,
    channels: u32,
) -> bool {
    chans.iter().zip(trk).all(|(&ch, v)| {
        streams_of_channel(ch, pubs, channels)
            .into_iter()
            .all(|(j, k)| {
                let total = published.get(k as usize).map_or(0, |p| p.total);
                match v.get(j) {
                    Some(t) => t.missing(total).is_empty(),
                    None => total == 0,
                }
            })
    })
}

/// Messages of the window on one stream that one subscriber has not received and that
/// nothing later overtook: the tail after the newest one received. At the drain
/// deadline these are in flight (or lost, which cannot be told apart), not lost.
pub fn in_flight(t: Option<&Tracker>, p: Published) -> u64 {
    let next = t.map_or(0, Tracker::next);
    p.hi.saturating_sub(next.max(p.lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_needs_every_stream_not_a_count() {
        let pubd = [Published {
            lo: 0,
            hi: 3,
            total: 3,
        }];
        let mut t = Tracker::new();
        for s in [0, 1, 1, 1] {
            t.observe(s);
        }
        let trk = vec![vec![t.clone()]];
        // Four deliveries for three published, but 2 is missing.
        assert!(!conn_complete(&[0], &trk, &pubd, 1, 1));
        assert_eq!(in_flight(Some(&t), pubd[0]), 1);
        t.observe(2);
        assert!(conn_complete(&[0], &[vec![t.clone()]], &pubd, 1, 1));
        assert_eq!(in_flight(Some(&t), pubd[0]), 0);
        assert_eq!(in_flight(None, pubd[0]), 3);
        // Two publishers on one channel: tracker 1 missing.
        assert_eq!(streams_of_channel(0, 2, 1), vec![(0, 0), (1, 1)]);
        let two = [pubd[0], pubd[0]];
        assert!(!conn_complete(&[0], &[vec![t.clone()]], &two, 2, 1));
        assert_eq!(streams_of_channel(3, 2, 5), vec![(0, 3)]);
        assert_eq!(unflatten(&flatten(&two)), two.to_vec());
    }
}
