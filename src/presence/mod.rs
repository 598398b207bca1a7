//! Presence, the connection manager: which connections each user has, on which node.
//! One presence thread per node owns it. Shards never wait for it: they hand it
//! `Msg`s over a bounded queue with `try_send` (see `shard/api.rs` for what happens
//! when it is full) and get query answers back as `ShardMsg::Reply`.
//!
//! The thread batches: everything queued when it wakes (and, during a connect storm,
//! whatever arrives within `BATCH_WINDOW`) becomes one pipelined Redis round; the
//! heartbeat refreshes every local user in one round per interval. With `--redis` the
//! entries live in Redis (`store.rs`, layout in docs/protocol.md); in embedded mode the
//! thread's own table answers queries.

pub mod bench;
mod local;
pub mod store;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::config::Config;
use crate::ids::ConnId;
use crate::ids::ShardId;
use crate::inbox::InboxSender;
use crate::metrics::Metrics;
use crate::msg::ShardMsg;
use crate::protocol::json::push_string;
use crate::protocol::{reply, ErrorCode};
use crate::redis::blocking::Client;
use crate::redis::cluster_blocking::ClusterClient;
use crate::redis::{BlockingRedis, RedisUrl};
use local::{Entry, Local};
use store::{Op, RedisStore};

/// Capacity of the queue from the shards.
/// See `config::Tuning`.
pub const QUEUE: usize = crate::config::TUNING.presence_queue;
/// Most messages applied in one round.
/// See `config::Tuning`.
const BATCH: usize = crate::config::TUNING.presence_batch;
/// During a burst, how long the thread keeps collecting before it writes.
/// See `config::Tuning`.
const BATCH_WINDOW: Duration = crate::config::TUNING.presence_batch_window;

/// Where a query answer goes.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub shard: ShardId,
    pub conn: ConnId,
    /// Answer as an HTTP response (and close) rather than a WebSocket frame.
    pub http: bool,
}

/// Shard → presence thread.
#[derive(Debug)]
pub enum Msg {
    Open { user: Box<str>, cid: Box<str> },
    Close { user: Box<str>, cid: Box<str> },
    Query { user: Box<str>, to: ReplyTo },
}

/// A shard's way to reach the presence thread.
#[derive(Clone)]
pub struct PresenceHandle {
    tx: Sender<Msg>,
    /// `{serverId}:{boot}`: prefix of this process's connection ids.
    tag: Arc<str>,
}

impl PresenceHandle {
    /// The connection id of connection generation `gen` of shard `shard`.
    pub fn conn_id(&self, shard: ShardId, gen: u32) -> Box<str> {
        format!("{}:{shard}:{gen}", self.tag).into()
    }

    /// Queues without blocking; gives the message back when the queue is full.
    pub fn try_send(&self, msg: Msg) -> Result<(), Msg> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
        })
    }
}

pub use crate::metrics::PresenceMetrics;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{"serverId":…,"socketId":…,"connectedAt":ms}`
pub fn entry_value(server_id: &str, cid: &str, connected_at: u64) -> Box<str> {
    let mut v = Vec::with_capacity(64 + server_id.len() + cid.len());
    v.extend_from_slice(b"{\"serverId\":");
    push_string(&mut v, server_id);
    v.extend_from_slice(b",\"socketId\":");
    push_string(&mut v, cid);
    v.extend_from_slice(format!(",\"connectedAt\":{connected_at}}}").as_bytes());
    String::from_utf8_lossy(&v).into()
}

/// The answer's JSON body (built by `protocol::reply`).
pub fn answer_json(user: &str, connections: &[Box<str>]) -> Vec<u8> {
    reply::presence_body(user, connections)
}

/// The bytes that answer a query: a text frame, or a complete HTTP response.
pub fn render_answer(http: bool, user: &str, result: Option<&[Box<str>]>) -> Bytes {
    match (http, result) {
        (false, Some(c)) => {
            crate::ws::frame::build(crate::ws::frame::OutOp::Text, &answer_json(user, c)).freeze()
        }
        (false, None) => reply::error(
            ErrorCode::Unavailable,
            "presence is unavailable: Redis is down",
            None,
            None,
        ),
        (true, Some(c)) => {
            let mut body = answer_json(user, c);
            body.push(b'\n');
            crate::http::response::json_response(200, &body, "").into()
        }
        (true, None) => {
            crate::http::response::json_error(503, "presence is unavailable: Redis is down").into()
        }
    }
}

/// The running presence thread.
pub struct Started {
    pub handle: PresenceHandle,
    /// Ends (after removing this node's entries) once every handle is dropped.
    pub thread: JoinHandle<()>,
}

/// Starts the presence thread, or returns `None` when presence is off.
pub fn start(
    config: &Config,
    shards: Vec<InboxSender<ShardMsg>>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Option<Started>> {
    if !config.presence.enabled {
        return Ok(None);
    }
    let started_at = now_ms();
    let boot = radix36(started_at ^ (u64::from(std::process::id()) << 40));
    let tag: Arc<str> = format!("{}:{boot}", config.server_id).into();
    let heartbeat = config.presence.heartbeat;
    let store = match &config.redis {
        None => None,
        Some(url) => {
            let client = if config.is_cluster() {
                let seeds = RedisUrl::parse_cluster(url, &config.redis_tls)?;
                BlockingRedis::Cluster(ClusterClient::new(seeds))
            } else {
                BlockingRedis::One(Client::new(RedisUrl::parse_with(url, &config.redis_tls)?))
            };
            let mut live = b"{\"serverId\":".to_vec();
            push_string(&mut live, &config.server_id);
            let pid = std::process::id();
            live.extend_from_slice(
                format!(",\"boot\":\"{boot}\",\"pid\":{pid},\"startedAt\":{started_at}}}")
                    .as_bytes(),
            );
            Some(RedisStore::new(
                client,
                &config.server_id,
                String::from_utf8_lossy(&live).into_owned(),
                config.presence.ttl_secs,
                3 * heartbeat.as_millis() as u64,
                metrics.clone(),
            ))
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let thread = Presence {
        rx,
        shards,
        local: Local::default(),
        store,
        server_id: config.server_id.clone(),
        heartbeat,
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("fanout-presence".into())
        .spawn(move || thread.run())?;
    Ok(Some(Started {
        handle: PresenceHandle { tx, tag },
        thread,
    }))
}

fn radix36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

struct Presence {
    rx: Receiver<Msg>,
    shards: Vec<InboxSender<ShardMsg>>,
    local: Local,
    store: Option<RedisStore>,
    server_id: String,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
}

impl Presence {
    fn run(mut self) {
        if let Some(store) = self.store.as_mut() {
            store.start(&self.local);
        }
        let mut next_beat = Instant::now() + self.heartbeat;
        loop {
            let mut batch = Vec::new();
            match self.rx.recv_deadline(next_beat) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !batch.is_empty() {
                while batch.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                if batch.len() > 1 {
                    // A burst: keep collecting for a moment so it costs few rounds.
                    let until = Instant::now() + BATCH_WINDOW;
                    while batch.len() < BATCH {
                        match self.rx.recv_deadline(until) {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                }
                self.apply(batch);
            }
            if Instant::now() >= next_beat {
                if let Some(store) = self.store.as_mut() {
                    store.heartbeat(&self.local);
                }
                next_beat = Instant::now() + self.heartbeat;
            }
        }
        if let Some(store) = self.store.as_mut() {
            store.shutdown(&self.local);
        }
        tracing::debug!("presence stopped");
    }

    fn apply(&mut self, batch: Vec<Msg>) {
        let mut ops = Vec::new();
        let mut queries = Vec::new();
        let now = now_ms();
        for msg in batch {
            match msg {
                Msg::Open { user, cid } => {
                    let entry = Entry {
                        cid: cid.into(),
                        connected_at: now,
                    };
                    self.local.insert(&user, entry.clone());
                    ops.push(Op::Open { user, entry });
                }
                Msg::Close { user, cid } => {
                    if self.local.remove(&user, &cid) {
                        ops.push(Op::Close { user, cid });
                    }
                }
                Msg::Query { user, to } => queries.push((user, to)),
            }
        }
        let m = &self.metrics.presence;
        m.updates.fetch_add(ops.len() as u64, Ordering::Relaxed);
        m.connections
            .store(self.local.len() as u64, Ordering::Relaxed);
        m.users
            .store(self.local.user_count() as u64, Ordering::Relaxed);
        if let Some(store) = self.store.as_mut() {
            if !ops.is_empty() {
                store.write(ops, &self.local);
            }
        }
        if queries.is_empty() {
            return;
        }
        let users: Vec<&str> = queries.iter().map(|(u, _)| &**u).collect();
        let results: Option<Vec<Vec<Box<str>>>> = match self.store.as_mut() {
            Some(store) => store.query(&users, &self.local),
            None => Some(
                users
                    .iter()
                    .map(|u| {
                        self.local
                            .get(u)
                            .iter()
                            .map(|e| e.value(&self.server_id))
                            .collect()
                    })
                    .collect(),
            ),
        };
        self.metrics
            .presence
            .queries
            .fetch_add(queries.len() as u64, Ordering::Relaxed);
        for (i, (user, to)) in queries.iter().enumerate() {
            let result = results.as_ref().and_then(|r| r.get(i)).map(Vec::as_slice);
            let frame = render_answer(to.http, user, result);
            if let Some(tx) = self.shards.get(to.shard.index()) {
                let _ = tx.send(ShardMsg::Reply {
                    conn: to.conn,
                    frame,
                    close_after: to.http,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_answers_are_json() {
        let v = entry_value("node \"1\"", "c:1", 42);
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"serverId":"node \"1\"","socketId":"c:1","connectedAt":42})
        );
        let a: serde_json::Value = serde_json::from_slice(&answer_json("u", &[v])).unwrap();
        assert_eq!(a["online"], true);
        assert_eq!(a["connections"][0]["connectedAt"], 42);
        let none: serde_json::Value = serde_json::from_slice(&answer_json("u", &[])).unwrap();
        assert_eq!(
            none,
            serde_json::json!({"type":"presence","user":"u","online":false,"connections":[]})
        );
        assert_eq!(radix36(0), "0");
        assert_eq!(radix36(36 * 36 + 35), "10z");
    }
}
