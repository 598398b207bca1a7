//! Every internal size, batch and timeout of the node in one documented place: queue
//! capacities, batch sizes, back-pressure thresholds and internal timeouts. These are not
//! flags (what a user may set is in `Config`); they are the engine's own constants, read
//! as `config::TUNING.<name>` by the module that uses each. Changing one is an engine
//! change: measure it (docs/benchmarks.md).

use std::time::Duration;

/// The node's internal sizes and timeouts (see each field).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    // --- shards ---
    /// Capacity of each shard's delivery queue. A full queue drops (counted, and the
    /// channel's subscribers get a `gap`). Kept small on purpose: under overload a
    /// queued message waits capacity ÷ drain rate, so a deep queue only adds latency
    /// (at 5,000 messages/s to 1,000 subscribers each, 4,096 messages is under a second).
    pub shard_queue: usize,
    /// Pending connections the kernel may queue before shard 0 accepts them.
    pub listen_backlog: i32,
    /// Size of a shard's one shared read buffer.
    pub read_buf: usize,
    /// Reads per readable event before other connections get their turn.
    pub reads_per_event: usize,
    /// A connection's buffer of a partly received message keeps its capacity up to this
    /// (or up to 4× what it holds): shrinking it on every partial read reallocated once
    /// per read for clients that send in pieces.
    pub inbuf_keep: usize,
    /// A delivery to at least this many members of one channel on a shard is copied
    /// once into a frame of the shard's own (when the node has several shards), so the
    /// per-member clones do not share one reference count across cores.
    pub local_copy_members: usize,
    /// A tick that freed at least this many connections' outbound queues (a burst of
    /// connections went idle) gives the freed heap back to the OS (`shard::trim`).
    pub trim_released: usize,
    /// At most one such trim per this interval, process-wide.
    pub trim_every: Duration,
    /// Deliveries taken from the inbox per loop turn before sockets get a look.
    pub inbox_batch: usize,
    /// Intake stays paused for lagging connections only while they progressed this
    /// recently.
    pub max_stall: Duration,
    /// Lagging connections that pause intake: at least this many (and an eighth of the
    /// shard), so a few slow clients never pause anyone.
    pub min_lagging: usize,
    /// Presence updates a shard keeps while the presence queue is full; past it new
    /// connects are not recorded (disconnects of recorded connections are always kept).
    pub presence_backlog: usize,
    // --- broker ---
    /// Capacity of the Redis writer's publish queue, the reader's command queue and the
    /// embedded bus queue; a full queue answers publishers with `unavailable`.
    pub broker_queue: usize,
    /// Channels per SUBSCRIBE / UNSUBSCRIBE command.
    pub subscribe_batch: usize,
    /// How often the pub/sub probe is published.
    pub probe_every: Duration,
    /// A probe not back within this long means the subscriber is deaf.
    pub probe_timeout: Duration,
    /// Bytes of unsent commands beyond which publishes are refused (Redis is not
    /// keeping up).
    pub max_unsent: usize,
    /// A Redis reply later than this means the connection is stuck: fail and reconnect.
    pub reply_timeout: Duration,
    /// Give up on a Redis connect attempt after this long.
    pub connect_timeout: Duration,
    // --- history ---
    /// Most messages one history read returns: a resume further behind gets `gap` and
    /// the newest this many; a `history` request's `limit` is capped to it.
    pub max_replay: usize,
    /// A `history` request without `limit` gets at most this many (the newest).
    pub default_history_limit: usize,
    /// History reads one connection may ask per second (`history`, and `subscribe`
    /// with `since`), in bursts of as many: each may read 10,000 messages.
    pub history_rate: u32,
    /// Bytes of live frames a shard holds per channel (or per resuming subscriber)
    /// while its history read is in flight; past it they are dropped and read again
    /// from history afterwards.
    pub max_held: usize,
    // --- presence ---
    /// Capacity of the presence thread's queue.
    pub presence_queue: usize,
    /// Most presence messages applied in one round.
    pub presence_batch: usize,
    /// During a burst, how long the presence thread keeps collecting before it writes.
    pub presence_batch_window: Duration,
    /// Connect/read timeout of the presence thread's blocking Redis connection.
    pub presence_io_timeout: Duration,
    /// Removals kept for replay while Redis is down; past it the oldest are forgotten.
    pub presence_max_removals: usize,
}

/// The values the node runs with.
pub const TUNING: Tuning = Tuning {
    shard_queue: 4096,
    listen_backlog: 4096,
    read_buf: 64 * 1024,
    reads_per_event: 8,
    inbuf_keep: 16 * 1024,
    local_copy_members: 16,
    trim_released: 1024,
    trim_every: Duration::from_secs(10),
    inbox_batch: 1024,
    max_stall: Duration::from_secs(1),
    min_lagging: 32,
    presence_backlog: 65_536,
    broker_queue: 65_536,
    subscribe_batch: 512,
    probe_every: Duration::from_secs(1),
    probe_timeout: Duration::from_secs(3),
    max_unsent: 16 * 1024 * 1024,
    reply_timeout: Duration::from_secs(3),
    connect_timeout: Duration::from_secs(2),
    max_replay: 10_000,
    default_history_limit: 100,
    history_rate: 20,
    max_held: 4 * 1024 * 1024,
    presence_queue: 65_536,
    presence_batch: 16_384,
    presence_batch_window: Duration::from_millis(2),
    presence_io_timeout: Duration::from_secs(3),
    presence_max_removals: 1 << 20,
};
