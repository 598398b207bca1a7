//! One subscriber of `churn-deliveries` as loadgen sees it across all of its connections:
//! what its parsed frames (`churn_deliveries_frame`) say, per stream what it received (sequence
//! tracking with `seq::Tracker`: distinct, duplicates, reorders, what is missing), the
//! last offset seen per channel (for `since`), its churn counters, and a bounded event log
//! that says what happened when. No sockets and no clocks: the worker feeds it.

use serde_json::{json, Value};

use super::churn_deliveries_frame::{parse, Frame};
use crate::plan::{n_streams, stream_of};
use crate::scan::channel_index;
use crate::seq::{Seen, Tracker};

/// What the subscriber needs to know about the run to read its frames.
pub(super) struct Ctx {
    pub(super) prefix: Vec<u8>,
    pub(super) pubs: u32,
    pub(super) channels: u32,
    /// Publishing start (log times are relative to it); 0 before it is known.
    pub(super) t0: u64,
}

/// Per-subscriber churn and frame counters (summed over subscribers for the report).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub(super) drops: u64,
    pub(super) reconnects: u64,
    pub(super) resubscribes_since: u64,
    pub(super) resumes_without_offset: u64,
    pub(super) reconnect_errors: u64,
    pub(super) resubscribe_errors: u64,
    pub(super) server_closes: u64,
    pub(super) gaps: u64,
    pub(super) error_frames: u64,
    pub(super) foreign: u64,
    pub(super) unparsed: u64,
    pub(super) other: u64,
}

impl Counters {
    pub(super) fn add(&mut self, o: &Counters) {
        self.drops += o.drops;
        self.reconnects += o.reconnects;
        self.resubscribes_since += o.resubscribes_since;
        self.resumes_without_offset += o.resumes_without_offset;
        self.reconnect_errors += o.reconnect_errors;
        self.resubscribe_errors += o.resubscribe_errors;
        self.server_closes += o.server_closes;
        self.gaps += o.gaps;
        self.error_frames += o.error_frames;
        self.foreign += o.foreign;
        self.unparsed += o.unparsed;
        self.other += o.other;
    }
}

/// One stream (publisher × channel) as this subscriber received it.
pub(super) struct StreamTrack {
    pub(super) k: u32,
    trk: Tracker,
    pub(super) received: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    dup_seqs: Vec<u64>,
}

/// Most events kept per subscriber; later ones are only counted.
const LOG_CAP: usize = 400;
/// Most duplicate sequence numbers remembered per stream.
const DUP_CAP: usize = 32;

/// One subscriber, across all its connections.
pub(super) struct Sub {
    pub(super) gid: usize,
    pub(super) url: usize,
    pub(super) chans: Vec<u32>,
    /// Last offset seen per channel slot: from deliveries, or from `subscribed` after a
    /// subscribe without `since`.
    pub(super) offsets: Vec<Option<String>>,
    /// Per channel slot: the last subscribe carried `since`.
    with_since: Vec<bool>,
    /// Per channel slot: no delivery yet since the last (re)subscribe.
    fresh: Vec<bool>,
    pub(super) streams: Vec<StreamTrack>,
    pub(super) c: Counters,
    pub(super) delivered_frames: u64,
    log: Vec<String>,
    log_overflow: u64,
}

impl Sub {
    pub(super) fn new(gid: usize, url: usize, chans: Vec<u32>, pubs: u32, channels: u32) -> Sub {
        let streams = chans
            .iter()
            .flat_map(|&c| {
                (0..n_streams(pubs, channels))
                    .filter(move |k| k % channels == c)
                    .map(|k| StreamTrack {
                        k,
                        trk: Tracker::new(),
                        received: 0,
                        duplicates: 0,
                        reordered: 0,
                        dup_seqs: Vec::new(),
                    })
            })
            .collect();
        let n = chans.len();
        Sub {
            gid,
            url,
            chans,
            offsets: vec![None; n],
            with_since: vec![false; n],
            fresh: vec![true; n],
            streams,
            c: Counters::default(),
            delivered_frames: 0,
            log: Vec::new(),
            log_overflow: 0,
        }
    }

    /// Append an event to the log (time relative to the publishing start).
    pub(super) fn log(&mut self, cx: &Ctx, now: u64, what: String) {
        if self.log.len() >= LOG_CAP {
            self.log_overflow += 1;
            return;
        }
        let rel = if cx.t0 == 0 {
            "   setup".to_string()
        } else {
            format!("{:8.3}s", (now as f64 - cx.t0 as f64) / 1e9)
        };
        self.log.push(format!("{rel} {what}"));
    }

    fn channel_name(cx: &Ctx, c: u32) -> String {
        format!("{}.{}", String::from_utf8_lossy(&cx.prefix), c)
    }

    /// The subscribe command for channel slot `j`, with `since` when given; remembers
    /// which kind it was and logs it.
    pub(super) fn subscribe_cmd(
        &mut self,
        cx: &Ctx,
        now: u64,
        j: usize,
        since: Option<String>,
    ) -> String {
        let name = Self::channel_name(cx, self.chans[j]);
        self.with_since[j] = since.is_some();
        self.fresh[j] = true;
        let cmd = match &since {
            Some(o) => json!({"type":"subscribe","channel":name,"since":o}),
            None => json!({"type":"subscribe","channel":name}),
        };
        let what = match &since {
            Some(o) => format!("subscribe {name} since {o}"),
            None => format!("subscribe {name}"),
        };
        self.log(cx, now, what);
        cmd.to_string()
    }

    /// A one-line summary of where each stream stands, for the log.
    pub(super) fn position(&self, cx: &Ctx) -> String {
        let mut parts: Vec<String> = self
            .streams
            .iter()
            .map(|st| format!("stream {} next seq {}", st.k, st.trk.next()))
            .collect();
        for (j, o) in self.offsets.iter().enumerate() {
            parts.push(format!(
                "{} last offset {}",
                Self::channel_name(cx, self.chans[j]),
                o.as_deref().unwrap_or("none")
            ));
        }
        parts.join(", ")
    }

    /// Handle one text frame. Returns the channel slot of a `subscribed` reply, or of an
    /// error reply (`Err`), so the worker can count its pending subscribes.
    pub(super) fn on_text(&mut self, cx: &Ctx, text: &[u8], now: u64) -> Option<Result<usize, ()>> {
        match parse(text) {
            Frame::Delivery {
                channel,
                p,
                s,
                offset,
            } => {
                self.delivered_frames += 1;
                self.delivery(cx, &channel, p, s, offset, now);
                None
            }
            Frame::Foreign => {
                self.c.foreign += 1;
                None
            }
            Frame::Subscribed { channel, offset } => {
                let slot = channel_index(channel.as_bytes(), &cx.prefix)
                    .and_then(|c| self.chans.iter().position(|&x| x == c));
                let Some(j) = slot else {
                    self.c.other += 1;
                    return None;
                };
                if !self.with_since[j] && offset.is_some() {
                    self.offsets[j] = offset.clone();
                }
                let o = offset.as_deref().unwrap_or("none");
                self.log(cx, now, format!("subscribed {channel} offset {o}"));
                Some(Ok(j))
            }
            Frame::Gap { channel } => {
                self.c.gaps += 1;
                self.log(cx, now, format!("gap {channel}"));
                None
            }
            Frame::Error { code } => {
                self.c.error_frames += 1;
                self.log(cx, now, format!("error {code}"));
                Some(Err(()))
            }
            Frame::Other => {
                self.c.other += 1;
                None
            }
            Frame::Unparsed => {
                self.c.unparsed += 1;
                None
            }
        }
    }

    fn delivery(
        &mut self,
        cx: &Ctx,
        channel: &str,
        p: u64,
        s: u64,
        offset: Option<String>,
        now: u64,
    ) {
        let Some(ch) = channel_index(channel.as_bytes(), &cx.prefix) else {
            self.c.foreign += 1;
            return;
        };
        let slot = self.chans.iter().position(|&c| c == ch);
        let k = (p < cx.pubs as u64)
            .then(|| stream_of(p as u32, ch, cx.pubs, cx.channels))
            .flatten();
        let (Some(j), Some(k)) = (slot, k) else {
            self.c.foreign += 1;
            return;
        };
        let Some(st) = self.streams.iter_mut().find(|t| t.k == k) else {
            self.c.foreign += 1;
            return;
        };
        let expected_next = st.trk.next();
        let seen = st.trk.observe(s);
        let o = offset.as_deref().unwrap_or("none").to_string();
        let note = match seen {
            Seen::InOrder => {
                st.received += 1;
                None
            }
            Seen::Gap(n) => {
                st.received += 1;
                Some(format!(
                    "hole: {channel} p{p} seq {s} offset {o} while {expected_next} was next ({n} missing)"
                ))
            }
            Seen::Reordered => {
                st.received += 1;
                st.reordered += 1;
                Some(format!("reordered: {channel} p{p} seq {s} offset {o}"))
            }
            Seen::Duplicate => {
                st.duplicates += 1;
                if st.dup_seqs.len() < DUP_CAP {
                    st.dup_seqs.push(s);
                }
                Some(format!("duplicate: {channel} p{p} seq {s} offset {o}"))
            }
        };
        if let Some(n) = note {
            self.log(cx, now, n);
        }
        if self.fresh[j] {
            self.fresh[j] = false;
            self.log(
                cx,
                now,
                format!("first delivery since subscribe: {channel} p{p} seq {s} offset {o}"),
            );
        }
        if offset.is_some() {
            self.offsets[j] = offset;
        }
    }

    /// Messages this subscriber should have: everything published on its streams (it
    /// subscribed before the first publish and stays to the end).
    pub(super) fn expected(&self, published: &[u64]) -> u64 {
        self.streams
            .iter()
            .map(|st| published.get(st.k as usize).copied().unwrap_or(0))
            .sum()
    }

    pub(super) fn delivered(&self) -> u64 {
        self.streams.iter().map(|st| st.received).sum()
    }

    pub(super) fn duplicates(&self) -> u64 {
        self.streams.iter().map(|st| st.duplicates).sum()
    }

    pub(super) fn reordered(&self) -> u64 {
        self.streams.iter().map(|st| st.reordered).sum()
    }

    /// Has every message published on its streams.
    pub(super) fn complete(&self, published: &[u64]) -> bool {
        self.streams
            .iter()
            .all(|st| st.received >= published.get(st.k as usize).copied().unwrap_or(0))
    }

    /// The detailed record of this subscriber for the report: counts, what is missing
    /// (ranges of sequence numbers per stream), which sequence numbers came twice, and
    /// the event log.
    pub(super) fn detail(&self, cx: &Ctx, published: &[u64]) -> Value {
        let pubs = cx.pubs.max(1);
        let missing: Vec<Value> = self
            .streams
            .iter()
            .filter_map(|st| {
                let n = published.get(st.k as usize).copied().unwrap_or(0);
                let ranges = st.trk.missing(n);
                let count: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
                (count > 0).then(|| {
                    json!({
                        "stream": st.k,
                        "channel": Self::channel_name(cx, st.k % cx.channels),
                        "publisher": st.k % pubs,
                        "published": n,
                        "count": count,
                        "ranges": ranges.iter().take(20).map(|r| json!([r.0, r.1])).collect::<Vec<_>>(),
                    })
                })
            })
            .collect();
        let dups: Vec<Value> = self
            .streams
            .iter()
            .filter(|st| st.duplicates > 0)
            .map(|st| json!({"stream": st.k, "count": st.duplicates, "seqs": st.dup_seqs}))
            .collect();
        let mut events = self.log.clone();
        if self.log_overflow > 0 {
            events.push(format!("({} later events not kept)", self.log_overflow));
        }
        json!({
            "sub": self.gid,
            "url": self.url,
            "channels": self.chans.iter().map(|&c| Self::channel_name(cx, c)).collect::<Vec<_>>(),
            "expected": self.expected(published),
            "delivered": self.delivered(),
            "lost": self.expected(published).saturating_sub(self.delivered()),
            "duplicates": self.duplicates(),
            "reordered": self.reordered(),
            "gaps": self.c.gaps,
            "drops": self.c.drops,
            "reconnects": self.c.reconnects,
            "server_closes": self.c.server_closes,
            "missing": missing,
            "duplicate_seqs": dups,
            "events": events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Ctx {
        Ctx {
            prefix: b"lg".to_vec(),
            pubs: 1,
            channels: 2,
            t0: 1,
        }
    }

    #[test]
    fn counts_distinct_duplicates_and_missing() {
        let cx = cx();
        let mut s = Sub::new(0, 0, vec![1], 1, 2);
        assert_eq!(s.streams.len(), 1);
        let cmd = s.subscribe_cmd(&cx, 2, 0, None);
        assert_eq!(cmd, r#"{"channel":"lg.1","type":"subscribe"}"#);
        let r = s.on_text(
            &cx,
            br#"{"type":"subscribed","channel":"lg.1","offset":"A"}"#,
            3,
        );
        assert_eq!(r, Some(Ok(0)));
        assert_eq!(s.offsets[0].as_deref(), Some("A"));
        for (seq, off) in [(0, "B"), (1, "C"), (1, "C"), (4, "F")] {
            let f = format!(r#"{{"channel":"lg.1","data":{{"p":0,"s":{seq}}},"offset":"{off}"}}"#);
            s.on_text(&cx, f.as_bytes(), 4);
        }
        assert_eq!((s.delivered(), s.duplicates(), s.reordered()), (3, 1, 0));
        assert_eq!(s.offsets[0].as_deref(), Some("F"));
        assert_eq!(s.expected(&[0, 6]), 6);
        assert!(!s.complete(&[0, 6]));
        let d = s.detail(&cx, &[0, 6]);
        assert_eq!(d["lost"], 3);
        assert_eq!(d["missing"][0]["ranges"], json!([[2, 4], [5, 6]]));
        assert_eq!(d["duplicate_seqs"][0]["seqs"], json!([1]));
        // A resubscribe with since keeps the offset it resumes from.
        let cmd = s.subscribe_cmd(&cx, 5, 0, Some("F".into()));
        assert!(cmd.contains(r#""since":"F""#), "{cmd}");
        s.on_text(
            &cx,
            br#"{"type":"subscribed","channel":"lg.1","offset":"Z"}"#,
            6,
        );
        assert_eq!(s.offsets[0].as_deref(), Some("F"));
        // Foreign: another channel, an unknown publisher.
        s.on_text(&cx, br#"{"channel":"lg.0","data":{"p":0,"s":0}}"#, 7);
        s.on_text(&cx, br#"{"channel":"lg.1","data":{"p":5,"s":0}}"#, 7);
        assert_eq!(s.c.foreign, 2);
    }
}
