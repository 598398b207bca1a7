//! History in Redis Streams: the two Lua scripts (publish: `XADD` capped + `PUBLISH` in
//! one atomic step; read: a range plus the facts that decide `gap`), the commands that
//! call them, the decoding of their answers, and the marker that carries a message's
//! offset through pub/sub. Keys per channel C: `__fanout:h:{C}` (the stream, field `d`)
//! and `__fanout:e:{C}` (its epoch); the `{C}` hash tag keeps both in the channel's
//! slot (a name with a hash tag of its own keeps that instead: `__fanout:ht:{team}:a`). No I/O: the writer sends what these build and hands back what Redis answered.

use bytes::BytesMut;

use crate::broker::history::{Found, Pick};
use crate::config::Namespace;
use crate::msg::HistoryRead;
use crate::offset::{Offset, StreamId};
use crate::redis::resp::{self, Value};

/// Appends a message and publishes it with its offset, atomically. KEYS: stream, epoch.
/// ARGV: channel, data, max length, age limit in seconds (0: none). Returns the offset.
/// A new stream (or one whose epoch key expired) gets a new epoch from the server
/// clock, so offsets of a lost stream never match the new one.
pub const PUBLISH_SCRIPT: &str = r#"
local e = redis.call('GET', KEYS[2])
if not e then
  local t = redis.call('TIME')
  e = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[2], e)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  local t = redis.call('TIME')
  redis.call('XTRIM', KEYS[1], 'MINID', '~', tostring(tonumber(t[1]) - ttl) .. '000')
end
local off = id .. ':' .. e
redis.call('PUBLISH', ARGV[1], '\0' .. off .. '\0' .. ARGV[2])
return off
"#;

/// Reads a channel's history. KEYS: stream, epoch. ARGV: since id ('' for none), since
/// epoch, upto id ('+' for the newest), limit, pick ('r' resume, 'o' oldest, 'n'
/// newest). Returns {epoch, newest id, gap (0/1), id1, data1, id2, data2, ...}, oldest
/// first. The `gap` rule is `broker::history::after_since`'s.
pub const READ_SCRIPT: &str = r#"
local e = redis.call('GET', KEYS[2]) or '0'
local top, len, added, first = '0-0', 0, 0, nil
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    local k, v = info[i], info[i + 1]
    if k == 'last-generated-id' then top = v
    elseif k == 'length' then len = v
    elseif k == 'entries-added' then added = v
    elseif k == 'first-entry' and v then first = v[1] end
  end
else
  e = '0'
end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local removed = added > len
local gap = 0
local from = '-'
if ARGV[1] ~= '' then
  if ARGV[2] ~= e then
    if not (ARGV[2] == '0' and ARGV[1] == '0-0') or removed then gap = 1 end
  else
    from = '(' .. ARGV[1]
    if removed and first and older(ARGV[1], first) then gap = 1 end
  end
end
local limit = tonumber(ARGV[4])
local out = {e, top, gap}
if limit <= 0 or e == '0' then return out end
local entries
local newest_first = false
if ARGV[5] == 'n' then
  entries = redis.call('XREVRANGE', KEYS[1], ARGV[3], from, 'COUNT', limit)
  newest_first = true
else
  entries = redis.call('XRANGE', KEYS[1], from, ARGV[3], 'COUNT', limit + 1)
  if #entries > limit then
    if ARGV[5] == 'r' then
      out[3] = 1
      entries = redis.call('XREVRANGE', KEYS[1], ARGV[3], from, 'COUNT', limit)
      newest_first = true
    else
      entries[#entries] = nil
    end
  end
end
local n = #entries
for i = 1, n do
  local entry = entries[newest_first and (n + 1 - i) or i]
  local fields = entry[2]
  local data = ''
  for j = 1, #fields, 2 do
    if fields[j] == 'd' then data = fields[j + 1] end
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = data
end
return out
"#;

/// The SHA1 of a script, as `EVALSHA` wants it.
pub fn sha(script: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(script.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The two scripts' SHA1s, computed once.
pub struct Scripts {
    pub publish: String,
    pub read: String,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            publish: sha(PUBLISH_SCRIPT),
            read: sha(READ_SCRIPT),
        }
    }
}

/// The stream key of `channel`.
pub fn stream_key(channel: &str) -> Vec<u8> {
    key("h", channel)
}

/// The epoch key of `channel`.
pub fn epoch_key(channel: &str) -> Vec<u8> {
    key("e", channel)
}

/// A key of `channel` in the channel's own Redis Cluster slot: a name with a hash tag of
/// its own (`{team}:a`) keeps it (`__fanout:ht:{team}:a`: the prefix has no brace, so
/// the key's tag is the name's); any other name is wrapped whole in one
/// (`__fanout:h:{C}`), which is the whole name as long as it has no `}`. The two forms
/// differ in their prefix, so `room` and `{room}` never share a key. A name with a `}`
/// but no tag cannot share a key's slot (`cluster_safe` is false for it; one Redis does
/// not care).
fn key(kind: &str, channel: &str) -> Vec<u8> {
    if has_hash_tag(channel) {
        format!("__fanout:{kind}t:{channel}").into_bytes()
    } else {
        format!("__fanout:{kind}:{{{channel}}}").into_bytes()
    }
}

fn has_hash_tag(channel: &str) -> bool {
    let tag = crate::redis::cluster::hash_tag(channel.as_bytes());
    tag.len() != channel.len()
}

/// Whether a history channel named `channel` can keep its history in Redis Cluster:
/// its keys and the channel itself must hash to one slot.
pub fn cluster_safe(channel: &str) -> bool {
    has_hash_tag(channel) || !channel.contains('}')
}

impl Scripts {
    /// The SHA1s of Redis Cluster mode: the publish script with `SPUBLISH`.
    pub fn cluster() -> Scripts {
        Scripts {
            publish: sha(&cluster_publish_script()),
            read: sha(READ_SCRIPT),
        }
    }
}

/// `PUBLISH_SCRIPT` for Redis Cluster: `SPUBLISH`, so the message goes to the shard
/// channel in the keys' slot (`{C}` is the channel's slot).
pub fn cluster_publish_script() -> String {
    PUBLISH_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
}

/// `encode_load` with the cluster publish script.
pub fn encode_load_cluster(out: &mut BytesMut) {
    let publish = cluster_publish_script();
    resp::encode(out, &[b"SCRIPT", b"LOAD", publish.as_bytes()]);
    resp::encode(out, &[b"SCRIPT", b"LOAD", READ_SCRIPT.as_bytes()]);
}

/// `SCRIPT LOAD` of both scripts (sent first on every new connection).
pub fn encode_load(out: &mut BytesMut) {
    resp::encode(out, &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()]);
    resp::encode(out, &[b"SCRIPT", b"LOAD", READ_SCRIPT.as_bytes()]);
}

/// `EVALSHA` of the publish script for `payload` on `channel`.
pub fn encode_publish(
    out: &mut BytesMut,
    scripts: &Scripts,
    channel: &str,
    payload: &[u8],
    ns: &Namespace,
) {
    let size = ns.history_size.to_string();
    let ttl = ns.history_ttl_secs.to_string();
    resp::encode(
        out,
        &[
            b"EVALSHA",
            scripts.publish.as_bytes(),
            b"2",
            &stream_key(channel),
            &epoch_key(channel),
            channel.as_bytes(),
            payload,
            size.as_bytes(),
            ttl.as_bytes(),
        ],
    );
}

/// `EVALSHA` of the read script for `read`.
pub fn encode_read(out: &mut BytesMut, scripts: &Scripts, read: &HistoryRead) {
    let (since_id, since_epoch) = match read.since {
        Some(o) => (o.id.to_string(), o.epoch.to_string()),
        None => (String::new(), String::new()),
    };
    let upto = read
        .upto
        .map(|id| id.to_string())
        .unwrap_or_else(|| "+".into());
    let limit = read.limit.to_string();
    let pick: &[u8] = match Pick::of(read) {
        Pick::Resume => b"r",
        Pick::Oldest => b"o",
        Pick::Newest => b"n",
    };
    resp::encode(
        out,
        &[
            b"EVALSHA",
            scripts.read.as_bytes(),
            b"2",
            &stream_key(&read.channel),
            &epoch_key(&read.channel),
            since_id.as_bytes(),
            since_epoch.as_bytes(),
            upto.as_bytes(),
            limit.as_bytes(),
            pick,
        ],
    );
}

/// Decodes the read script's answer. Anything else (an error, a malformed reply) is
/// `None`: Redis data is not trusted.
pub fn decode_read(value: Value) -> Option<Found> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut it = items.into_iter();
    let epoch = match it.next()? {
        Value::Bulk(b) => std::str::from_utf8(&b).ok()?.parse().ok()?,
        _ => return None,
    };
    let top = match it.next()? {
        Value::Bulk(b) => StreamId::parse(&b)?,
        _ => return None,
    };
    let gap = matches!(it.next()?, Value::Int(1));
    let mut entries = Vec::new();
    while let Some(id) = it.next() {
        let (Value::Bulk(id), Some(Value::Bulk(data))) = (id, it.next()) else {
            return None;
        };
        entries.push((StreamId::parse(&id)?, data));
    }
    Some(Found {
        epoch,
        top,
        gap,
        entries,
    })
}

/// Splits a pub/sub payload from the publish script (`\0<offset>\0<data>`) into its
/// offset and data; any other payload is plain data without an offset.
pub fn split_marked(payload: &[u8]) -> (Option<Offset>, &[u8]) {
    if payload.first() != Some(&0) {
        return (None, payload);
    }
    let window = &payload[1..payload.len().min(2 + crate::offset::MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == 0) else {
        return (None, payload);
    };
    let offset = std::str::from_utf8(&window[..end])
        .ok()
        .and_then(Offset::parse);
    match offset {
        Some(o) => (Some(o), &payload[end + 2..]),
        None => (None, payload),
    }
}

/// The publish script's answer: the message's offset.
pub fn decode_published(value: &Value) -> Option<Offset> {
    match value {
        Value::Bulk(b) => std::str::from_utf8(b).ok().and_then(Offset::parse),
        _ => None,
    }
}

/// A bulk payload for tests of `split_marked`.
#[cfg(test)]
fn marked(offset: &str, data: &[u8]) -> bytes::Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(offset.as_bytes());
    v.push(0);
    v.extend_from_slice(data);
    bytes::Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use crate::redis::cluster::key_slot;

    #[test]
    fn history_keys_sit_in_their_channels_slot_and_never_collide() {
        for ch in [
            "room:1", "{team}:a", "x{y}z", "b{c", "{room}", "room", "é{ü}",
        ] {
            let slot = key_slot(ch.as_bytes());
            assert_eq!(key_slot(&super::stream_key(ch)), slot, "{ch}");
            assert_eq!(key_slot(&super::epoch_key(ch)), slot, "{ch}");
            assert!(super::cluster_safe(ch), "{ch}");
        }
        assert_ne!(super::stream_key("room"), super::stream_key("{room}"));
        assert_ne!(super::stream_key("room"), super::epoch_key("room"));
        for ch in ["a}b", "}{", "{}d"] {
            assert!(!super::cluster_safe(ch), "{ch}");
        }
    }

    use super::*;
    use bytes::Bytes;

    #[test]
    fn marker_round_trip_and_garbage() {
        let p = marked("5-1:77", br#"{"a":1}"#);
        let (o, d) = split_marked(&p);
        assert_eq!(o, Offset::parse("5-1:77"));
        assert_eq!(d, br#"{"a":1}"#);
        for bad in [&b"\0"[..], b"\0\0x", b"\0nope\0x", b"\x005-1:7", b"plain"] {
            let (o, d) = split_marked(bad);
            assert_eq!((o, d), (None, bad));
        }
        let empty = marked("1-0:1", b"");
        let (o, d) = split_marked(&empty);
        assert_eq!((o.is_some(), d), (true, &b""[..]));
    }

    #[test]
    fn read_answers_are_checked() {
        let ok = Value::Array(vec![
            Value::Bulk(Bytes::from("9")),
            Value::Bulk(Bytes::from("5-2")),
            Value::Int(0),
            Value::Bulk(Bytes::from("5-1")),
            Value::Bulk(Bytes::from("x")),
        ]);
        let f = decode_read(ok).unwrap();
        assert_eq!(
            (f.epoch, f.top, f.gap),
            (9, StreamId { ms: 5, seq: 2 }, false)
        );
        assert_eq!(f.entries.len(), 1);
        assert_eq!(decode_read(Value::Error(Bytes::from("NOSCRIPT"))), None);
        let odd = Value::Array(vec![
            Value::Bulk(Bytes::from("9")),
            Value::Bulk(Bytes::from("5-2")),
            Value::Int(0),
            Value::Bulk(Bytes::from("5-1")),
        ]);
        assert_eq!(decode_read(odd), None);
        assert_eq!(sha("").len(), 40);
        assert!(cluster_publish_script().contains("redis.call('SPUBLISH'"));
        assert_ne!(Scripts::cluster().publish, Scripts::default().publish);
    }
}
