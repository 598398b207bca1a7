//! Channel history on the broker side: what a history read found (`Found`), how its
//! answer reaches whoever asked (`answer`: delivery frames for a shard's sync or a
//! resuming subscriber, a reply frame, an HTTP response), and the embedded mode's
//! in-memory store (`MemoryHistory`) with the same semantics as the Redis Streams
//! scripts in `redis/history.rs`: capped per channel, optional age limit, an epoch per
//! stream, and the same rule for when a reader is told of a `gap`. Never blocks; the
//! store owns no thread.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::ShardLinks;
use crate::config::Namespace;
use crate::http::response;
use crate::msg::{HistoryRead, HistoryTo, Replay, ShardMsg};
use crate::offset::{Offset, StreamId};
use crate::protocol::envelope::EnvelopeBuilder;
use crate::protocol::{reply, ErrorCode};

/// Most messages one read returns (a resume further behind gets `gap` and the newest).
/// See `config::Tuning`.
pub const MAX_REPLAY: usize = crate::config::TUNING.max_replay;
/// Most bytes of data in one `history` answer (WebSocket or HTTP): a client controls
/// `limit`, not how much memory its answer takes.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Keeps at most `MAX_ANSWER_BYTES` of data: the oldest entries of a page after `since`,
/// the newest otherwise.
fn cap_bytes(entries: &mut Vec<(StreamId, Bytes)>, oldest_first: bool) {
    let total: usize = entries.iter().map(|(_, d)| d.len()).sum();
    if total <= MAX_ANSWER_BYTES {
        return;
    }
    let mut kept = 0;
    let keep = |entry: &(StreamId, Bytes), kept: &mut usize| {
        *kept += entry.1.len();
        *kept <= MAX_ANSWER_BYTES
    };
    if oldest_first {
        let n = entries.iter().take_while(|e| keep(e, &mut kept)).count();
        entries.truncate(n);
    } else {
        let n = entries
            .iter()
            .rev()
            .take_while(|e| keep(e, &mut kept))
            .count();
        entries.drain(..entries.len() - n);
    }
}

/// What a history read found: raw payloads after the asked position (oldest first),
/// the stream's epoch and newest id, and whether messages after the asked position are
/// gone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub epoch: u64,
    pub top: StreamId,
    pub gap: bool,
    pub entries: Vec<(StreamId, Bytes)>,
}

/// How a read picks its entries when more match than `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A resume: everything after `since`; past the limit, `gap` and the newest.
    Resume,
    /// A client's page after `since`: the oldest `limit`.
    Oldest,
    /// No `since`: the newest `limit`.
    Newest,
}

impl Pick {
    pub fn of(read: &HistoryRead) -> Pick {
        match (&read.to, read.since) {
            (_, None) => Pick::Newest,
            (HistoryTo::Sync { .. } | HistoryTo::Catch { .. }, Some(_)) => Pick::Resume,
            (_, Some(_)) => Pick::Oldest,
        }
    }
}

/// Sends the answer to `read`: delivery frames (built once here) for a sync or a
/// catch-up, a reply frame or an HTTP response otherwise. `Err`: the store could not
/// be read.
pub fn answer(
    links: &ShardLinks,
    envelope: &mut EnvelopeBuilder,
    read: HistoryRead,
    found: Result<Found, ()>,
) {
    let HistoryRead {
        channel, to, since, ..
    } = read;
    let found = found.map(|mut f| {
        if matches!(to, HistoryTo::Client { .. } | HistoryTo::Http { .. }) {
            cap_bytes(&mut f.entries, since.is_some());
        }
        f
    });
    match to {
        HistoryTo::Sync { shard, tag } => {
            let replay = found.map(|f| replay(envelope, &channel, f));
            links.control(
                shard,
                ShardMsg::Synced {
                    channel,
                    tag,
                    replay,
                },
            );
        }
        HistoryTo::Catch { shard, conn, tag } => {
            let replay = found.map(|f| replay(envelope, &channel, f));
            links.control(
                shard,
                ShardMsg::Caught {
                    channel,
                    conn,
                    tag,
                    replay,
                },
            );
        }
        HistoryTo::Client { shard, conn, id } => {
            let frame = match found {
                Ok(f) => reply::history_frame(&reply::history(
                    &channel,
                    messages(&f),
                    id.as_deref(),
                    true,
                )),
                Err(()) => reply::error(
                    ErrorCode::Unavailable,
                    "history is unavailable, try again",
                    id.as_deref(),
                    Some(&channel),
                ),
            };
            links.control(
                shard,
                ShardMsg::Reply {
                    conn,
                    frame,
                    close_after: false,
                },
            );
        }
        HistoryTo::Http { shard, conn } => {
            let http = match found {
                Ok(f) => {
                    let mut body = reply::history(&channel, messages(&f), None, false);
                    body.push(b'\n');
                    response::json_response(200, &body, "")
                }
                Err(()) => response::json_error(503, "history is unavailable, try again"),
            };
            links.control(
                shard,
                ShardMsg::Reply {
                    conn,
                    frame: Bytes::from(http),
                    close_after: true,
                },
            );
        }
    }
}

fn messages(f: &Found) -> impl Iterator<Item = (Offset, &[u8])> {
    let epoch = f.epoch;
    f.entries
        .iter()
        .map(move |(id, data)| (Offset { id: *id, epoch }, &data[..]))
}

fn replay(envelope: &mut EnvelopeBuilder, channel: &str, f: Found) -> Replay {
    let epoch = f.epoch;
    Replay {
        frames: f
            .entries
            .iter()
            .map(|(id, data)| {
                let offset = Offset { id: *id, epoch };
                (
                    offset,
                    envelope.build_checked_at(channel, data, Some(&offset)),
                )
            })
            .collect(),
        top: Offset { id: f.top, epoch },
        gap: f.gap,
    }
}

/// One channel's history in memory.
#[derive(Debug)]
struct Stream {
    epoch: u64,
    /// (id, payload), oldest first.
    entries: VecDeque<(StreamId, Bytes)>,
    last: StreamId,
    /// Entries ever added (with `entries.len()`: whether any were removed).
    added: u64,
}

/// Embedded mode's history: the same semantics as the Redis scripts, in one thread.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    streams: HashMap<Arc<str>, Stream>,
    last_epoch: u64,
}

impl MemoryHistory {
    /// Appends a message to `channel`'s history; returns its offset. `now_ms` is Unix
    /// time in milliseconds.
    pub fn append(&mut self, channel: &str, ns: &Namespace, payload: Bytes, now_ms: u64) -> Offset {
        self.expire(channel, ns, now_ms);
        if !self.streams.contains_key(channel) {
            // A new stream gets a new epoch: readers of an older one get `gap`.
            let epoch = (now_ms.saturating_mul(1000)).max(self.last_epoch + 1);
            self.last_epoch = epoch;
            self.streams.insert(
                Arc::from(channel),
                Stream {
                    epoch,
                    entries: VecDeque::new(),
                    last: StreamId::ZERO,
                    added: 0,
                },
            );
        }
        let Some(s) = self.streams.get_mut(channel) else {
            return Offset::default();
        };
        let id = if now_ms > s.last.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            s.last.next()
        };
        s.last = id;
        s.added += 1;
        s.entries.push_back((id, payload));
        while s.entries.len() > ns.history_size as usize {
            s.entries.pop_front();
        }
        Offset { id, epoch: s.epoch }
    }

    /// Drops what the namespace's age limit has expired: old entries, and the whole
    /// stream (epoch included) once its newest entry is that old, as Redis's `EXPIRE`.
    fn expire(&mut self, channel: &str, ns: &Namespace, now_ms: u64) {
        if ns.history_ttl_secs == 0 {
            return;
        }
        let min = now_ms.saturating_sub(u64::from(ns.history_ttl_secs) * 1000);
        if let Some(s) = self.streams.get_mut(channel) {
            if s.last.ms < min {
                self.streams.remove(channel);
                return;
            }
            while s.entries.front().is_some_and(|(id, _)| id.ms < min) {
                s.entries.pop_front();
            }
        }
    }

    /// Drops every stream the age limit has expired (call about once a second).
    pub fn sweep(&mut self, namespace_of: impl Fn(&str) -> u32, now_ms: u64) {
        self.streams.retain(|name, s| {
            let ttl = namespace_of(name);
            ttl == 0 || s.last.ms >= now_ms.saturating_sub(u64::from(ttl) * 1000)
        });
    }

    /// Reads `channel` as `read` asks (its `since`, `upto`, `limit`).
    pub fn read(&mut self, read: &HistoryRead, ns: &Namespace, now_ms: u64) -> Found {
        self.expire(&read.channel, ns, now_ms);
        let Some(s) = self.streams.get(&*read.channel) else {
            // No stream: nothing kept, epoch 0. A reader from an older epoch lost it.
            let gap = read.since.is_some_and(|o| o.epoch != 0);
            return Found {
                gap,
                ..Found::default()
            };
        };
        let removed = s.added > s.entries.len() as u64;
        let (after, mut gap) =
            after_since(read.since, s.epoch, s.entries.front().map(|e| e.0), removed);
        let upto = read.upto.unwrap_or(s.last);
        let matching: Vec<(StreamId, Bytes)> = s
            .entries
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a) && *id <= upto)
            .cloned()
            .collect();
        let entries = pick(matching, read.limit, Pick::of(read), &mut gap);
        Found {
            epoch: s.epoch,
            top: s.last,
            gap,
            entries,
        }
    }
}

/// The exclusive start of a read after `since` in a stream of `epoch` whose oldest
/// kept entry is `first` (`removed`: some entry was ever trimmed), and whether the
/// reader missed something history no longer has. The Lua read script applies the
/// same rule.
pub fn after_since(
    since: Option<Offset>,
    epoch: u64,
    first: Option<StreamId>,
    removed: bool,
) -> (Option<StreamId>, bool) {
    match since {
        None => (None, false),
        // Another epoch: the reader's position means nothing here. Only "nothing seen
        // before the stream existed" (epoch 0, id 0-0) can still be complete.
        Some(o) if o.epoch != epoch => (None, !(o.epoch == 0 && o.id == StreamId::ZERO) || removed),
        Some(o) => {
            let gap = removed && first.is_some_and(|f| o.id < f);
            (Some(o.id), gap)
        }
    }
}

/// Applies `limit` to the matching entries (oldest first) as `pick` says.
pub fn pick(
    mut matching: Vec<(StreamId, Bytes)>,
    limit: usize,
    pick: Pick,
    gap: &mut bool,
) -> Vec<(StreamId, Bytes)> {
    if matching.len() <= limit {
        return matching;
    }
    match pick {
        Pick::Oldest => {
            matching.truncate(limit);
            matching
        }
        Pick::Resume | Pick::Newest => {
            if pick == Pick::Resume {
                *gap = true;
            }
            matching.split_off(matching.len() - limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PublishRule, SubscribeRule};
    use crate::ids::{ConnId, ShardId};

    fn ns(size: u32, ttl: u32) -> Namespace {
        Namespace {
            prefix: String::new(),
            history_size: size,
            history_ttl_secs: ttl,
            subscribe: SubscribeRule::Public,
            publish: PublishRule::Public,
        }
    }

    fn read(since: Option<Offset>, limit: usize, resume: bool) -> HistoryRead {
        let conn = ConnId { key: 0, gen: 0 };
        HistoryRead {
            channel: Arc::from("c"),
            since,
            upto: None,
            limit,
            to: if resume {
                HistoryTo::Catch {
                    shard: ShardId::new(0),
                    conn,
                    tag: 0,
                }
            } else {
                HistoryTo::Client {
                    shard: ShardId::new(0),
                    conn,
                    id: None,
                }
            },
        }
    }

    fn ids(f: &Found) -> Vec<u64> {
        f.entries.iter().map(|(id, _)| id.seq).collect()
    }

    #[test]
    fn resume_gets_exactly_what_follows_and_gap_once_trimmed() {
        let ns = ns(3, 0);
        let mut h = MemoryHistory::default();
        let empty = h.read(&read(None, 0, true), &ns, 1);
        let start = Offset {
            id: empty.top,
            epoch: empty.epoch,
        };
        assert_eq!((start.epoch, start.id), (0, StreamId::ZERO));
        let offs: Vec<Offset> = (0..3)
            .map(|i| h.append("c", &ns, Bytes::from(format!("{i}")), 5))
            .collect();
        assert_eq!(offs[1].id, StreamId { ms: 5, seq: 1 });
        // From "nothing yet" before the stream existed: all three, no gap.
        let f = h.read(&read(Some(start), 100, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![0, 1, 2], false));
        // After the first: the other two.
        let f = h.read(&read(Some(offs[0]), 100, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![1, 2], false));
        // Two more trim the first two: a reader at offs[0] missed offs[1]'s neighbour.
        h.append("c", &ns, Bytes::from("3"), 5);
        h.append("c", &ns, Bytes::from("4"), 5);
        let f = h.read(&read(Some(offs[0]), 100, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![2, 3, 4], true));
        let f = h.read(&read(Some(offs[2]), 100, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![3, 4], false));
        // More than the limit behind: gap, then the newest.
        let f = h.read(&read(Some(offs[2]), 1, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![4], true));
        // A client's page: the oldest after since, no gap.
        let f = h.read(&read(Some(offs[2]), 1, false), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![3], false));
        // No since: the newest `limit`.
        let f = h.read(&read(None, 2, false), &ns, 5);
        assert_eq!(ids(&f), vec![3, 4]);
        // Another epoch: gap and everything.
        let other = Offset {
            epoch: offs[0].epoch + 1,
            ..offs[0]
        };
        let f = h.read(&read(Some(other), 100, true), &ns, 5);
        assert_eq!((ids(&f), f.gap), (vec![2, 3, 4], true));
    }

    #[test]
    fn answers_are_capped_in_bytes() {
        let big = |i| (StreamId { ms: 1, seq: i }, Bytes::from(vec![b'x'; 3 << 20]));
        let mut e: Vec<_> = (0..4).map(big).collect();
        cap_bytes(&mut e, false);
        assert_eq!(e.iter().map(|x| x.0.seq).collect::<Vec<_>>(), vec![2, 3]);
        let mut e: Vec<_> = (0..4).map(big).collect();
        cap_bytes(&mut e, true);
        assert_eq!(e.iter().map(|x| x.0.seq).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn age_limit_expires_entries_and_then_the_epoch() {
        let ns = ns(10, 2);
        let mut h = MemoryHistory::default();
        let a = h.append("c", &ns, Bytes::from("a"), 1_000);
        let b = h.append("c", &ns, Bytes::from("b"), 2_500);
        let f = h.read(&read(None, 10, false), &ns, 3_100);
        assert_eq!(f.entries.len(), 1, "a is older than 2 s");
        let f = h.read(&read(Some(a), 10, true), &ns, 3_100);
        assert!(f.gap);
        // Nothing for 2 s after b: the stream and its epoch are gone.
        let f = h.read(&read(Some(b), 10, true), &ns, 4_600);
        assert!(f.gap && f.entries.is_empty() && f.epoch == 0);
        let c = h.append("c", &ns, Bytes::from("c"), 4_700);
        assert_ne!(c.epoch, b.epoch, "a new stream, a new epoch");
        h.sweep(|_| 2, 10_000);
        assert!(h.streams.is_empty());
    }
}
