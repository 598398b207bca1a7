/**
 * fanout-client: a browser and Node.js client for the fanout WebSocket pub/sub server.
 *
 * One connection per client. It connects lazily (or on `connect()`), authenticates with
 * `{"type":"auth","token":…}` as its first message, resubscribes every live subscription
 * after each reconnect (with `since` = the last offset seen on history channels), matches
 * publish acks by `id`, and refreshes its token before `exp`. See README.md.
 */

/** The connection's state, as reported by the `state` event. */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** The part of the WebSocket API this client uses (the browser's, or `ws` in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor: `globalThis.WebSocket` in browsers, `WebSocket` from `ws` in Node 20. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A token, or a function that fetches one (called again before `exp` and after 4001/4003). */
export type TokenSource = string | (() => string | Promise<string>);

export interface FanoutClientOptions {
  /** JWT sent as the first message `{"type":"auth","token":…}`. */
  token?: TokenSource;
  /** WebSocket implementation; default `globalThis.WebSocket` (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor | (new (url: string) => unknown);
  /** Base of the exponential backoff, ms (default 500). */
  minReconnectDelay?: number;
  /** Cap of the exponential backoff, ms (default 20000). */
  maxReconnectDelay?: number;
  /** A connection attempt (socket open + auth) taking longer than this is abandoned and retried, ms (default 10000). */
  connectTimeout?: number;
  /** Requests (publish, history, presence) that may wait while disconnected; past it they reject with `queue_full` (default 1000). */
  maxQueue?: number;
  /** Longest time before `exp` at which the token is refreshed, ms (default 60000; at most a quarter of the remaining lifetime is used). */
  refreshMargin?: number;
  /** Random source in [0, 1) for the backoff jitter (default Math.random; for tests). */
  random?: () => number;
}

/** Context of a delivered message. */
export interface MessageContext {
  channel: string;
  /** Present on history channels: opaque, compare only for equality. */
  offset?: string;
}

export interface SubscribeOptions {
  onMessage?: (data: unknown, ctx: MessageContext) => void;
  /** Messages may have been missed that history could not fill: refetch your state. */
  onGap?: () => void;
  /** Each time the subscription becomes live (first time and after every resubscribe). */
  onSubscribed?: (info: { channel: string; offset?: string; resubscribed: boolean }) => void;
  /** The subscription ended without `unsubscribe()` (refused on resubscribe, dropped by a token refresh, client closed). */
  onUnsubscribed?: (reason: FanoutError) => void;
  /** An error about this subscription (also emitted on the client's `error` event). */
  onError?: (err: FanoutError) => void;
  /** Start from this offset (history channels): messages after it are replayed first. */
  since?: string;
}

export interface HistoryMessage {
  data: unknown;
  offset: string;
}

export interface HistoryResult {
  channel: string;
  messages: HistoryMessage[];
}

export interface PresenceConnection {
  serverId: string;
  socketId: string;
  connectedAt: number;
}

export interface PresenceResult {
  user: string;
  online: boolean;
  connections: PresenceConnection[];
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Whether the client will reconnect by itself. */
  reconnect: boolean;
  /** Delay before the next attempt, ms (when `reconnect`). */
  delay?: number;
}

export interface ClientEvents {
  state: (state: State) => void;
  error: (err: FanoutError) => void;
  connected: (info: { reconnected: boolean }) => void;
  disconnected: (info: DisconnectInfo) => void;
}

/**
 * An error from the server (`code` is its error code: `forbidden`, `bad_channel`,
 * `unavailable`, `rate_limited`, …) or from the client (`disconnected`, `closed`,
 * `queue_full`, `unsubscribed`, `token`, `transport`, `disconnected_by_server`,
 * `unauthorized`, `token_expired`).
 */
export class FanoutError extends Error {
  readonly code: string;
  readonly channel?: string;
  readonly closeCode?: number;
  constructor(code: string, message: string, extra: { channel?: string; closeCode?: number } = {}) {
    super(message);
    this.name = "FanoutError";
    this.code = code;
    if (extra.channel !== undefined) this.channel = extra.channel;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }
}

/** Close codes the server uses (docs/protocol.md). */
export const CloseCodes = {
  GOING_AWAY: 1001,
  SLOW_CONSUMER: 4000,
  UNAUTHORIZED: 4001,
  TOKEN_EXPIRED: 4003,
  DISCONNECTED_BY_SERVER: 4004,
} as const;

/** Reads `exp` (Unix seconds) from a JWT's payload without verifying it. */
export function decodeJwtExp(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    let b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return typeof payload?.exp === "number" ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}

/** Full-jitter exponential backoff: uniform in [0, min(max, min · 2^attempt)]. */
export function backoffDelay(attempt: number, min: number, max: number, random: () => number): number {
  const cap = Math.min(max, min * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}

type RequestKind = "publish" | "history" | "presence";

interface Request {
  kind: RequestKind;
  frame: Record<string, unknown>;
  resolve: (v: any) => void;
  reject: (e: FanoutError) => void;
  user?: string;
}

type SubState = "subscribing" | "subscribed" | "unsubscribed";

/** One channel subscription. Created by `client.subscribe()`. */
export class Subscription {
  readonly channel: string;
  /** Resolves on the first `subscribed`; rejects on `forbidden`, `bad_channel`, … */
  readonly ready: Promise<void>;
  /** Last offset seen on this channel (history channels), used as `since` on resubscribe. */
  offset?: string;
  /** @internal */ _state: SubState = "subscribing";
  /** @internal */ _sentSince = false;
  /** @internal */ _everSubscribed = false;
  private resolveReady!: () => void;
  private rejectReady!: (e: FanoutError) => void;
  private settled = false;

  /** @internal */
  constructor(
    private readonly client: FanoutClient,
    channel: string,
    /** @internal */ readonly _opts: SubscribeOptions,
  ) {
    this.channel = channel;
    this.offset = _opts.since;
    this.ready = new Promise<void>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    // Not awaiting `ready` must not crash Node with an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** `subscribing`, `subscribed` or `unsubscribed`. */
  get state(): SubState {
    return this._state;
  }

  /** Stops deliveries and tells the server. Idempotent. */
  unsubscribe(): void {
    this.client._unsubscribe(this);
  }

  /** @internal */
  _subscribed(offset: string | undefined): void {
    const resubscribed = this._everSubscribed;
    this._state = "subscribed";
    this._everSubscribed = true;
    // A history channel's current offset, so a reconnect before any message can resume
    // from here. When we sent `since`, the replay that follows moves the offset on.
    if (offset !== undefined && !this._sentSince) this.offset = offset;
    if (!this.settled) {
      this.settled = true;
      this.resolveReady();
    }
    this._opts.onSubscribed?.({ channel: this.channel, offset, resubscribed });
  }

  /** @internal */
  _message(data: unknown, offset: string | undefined): void {
    if (offset !== undefined) {
      if (offset === this.offset) return; // the hand-over between replay and live: already seen
      this.offset = offset;
    }
    this._opts.onMessage?.(data, offset === undefined ? { channel: this.channel } : { channel: this.channel, offset });
  }

  /** @internal */
  _ended(err: FanoutError, notify: boolean): void {
    this._state = "unsubscribed";
    if (!this.settled) {
      this.settled = true;
      this.rejectReady(err);
    } else if (notify) {
      this._opts.onUnsubscribed?.(err);
    }
  }
}

type Listener<K extends keyof ClientEvents> = ClientEvents[K];

/**
 * The client. `new FanoutClient(url, options)`; see README.md for the API and the
 * reconnect policy.
 */
export class FanoutClient {
  readonly url: string;
  private readonly opts: Required<Omit<FanoutClientOptions, "token" | "WebSocket">> & {
    token?: TokenSource;
  };
  private readonly WS: WebSocketConstructor;
  private _state: State = "disconnected";
  private ws: WebSocketLike | null = null;
  private authenticating = false;
  private closed = false;
  private attempt = 0;
  private everConnected = false;
  private nextId = 1;
  private readonly subs = new Map<string, Subscription>();
  private readonly pendingUnsubs = new Map<string, number>();
  private outbox: Request[] = [];
  private readonly inflight = new Map<number, Request>();
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  /** Resubscribes put off after a `rate_limited` (history reads are rate limited per connection). */
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  /** Subscribes of this connection not answered yet: queued requests wait for them. */
  private readonly awaiting = new Set<string>();
  /** Connected, and every resubscribe answered: requests go straight out. */
  private live = false;
  private token: string | undefined;
  private tokenExp: number | undefined;
  private tokenStale = false;
  private generation = 0;
  private readonly listeners: { [K in keyof ClientEvents]?: Set<Listener<K>> } = {};

  constructor(url: string, options: FanoutClientOptions = {}) {
    this.url = url;
    const WS = (options.WebSocket ?? (globalThis as any).WebSocket) as WebSocketConstructor | undefined;
    if (!WS) {
      throw new TypeError(
        "fanout-client: no WebSocket implementation; in Node 20 pass { WebSocket } from the 'ws' package",
      );
    }
    this.WS = WS;
    this.opts = {
      token: options.token,
      minReconnectDelay: options.minReconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 20000,
      connectTimeout: options.connectTimeout ?? 10000,
      maxQueue: options.maxQueue ?? 1000,
      refreshMargin: options.refreshMargin ?? 60000,
      random: options.random ?? Math.random,
    };
    if (typeof options.token === "string") {
      this.token = options.token;
      this.tokenExp = decodeJwtExp(options.token);
    }
  }

  /** The current connection state. */
  get state(): State {
    return this._state;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): () => void {
    let set = this.listeners[event] as Set<Listener<K>> | undefined;
    if (!set) {
      set = new Set();
      (this.listeners as any)[event] = set;
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  off<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): void {
    (this.listeners[event] as Set<Listener<K>> | undefined)?.delete(fn);
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    const set = this.listeners[event] as Set<(...a: any[]) => void> | undefined;
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's exception must not break the connection's bookkeeping.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }

  private setState(s: State): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  /** Opens the connection now (otherwise the first subscribe/publish/history/presence does). */
  connect(): void {
    if (this.closed) throw new FanoutError("closed", "the client is closed");
    if (this.ws || this.reconnectTimer || this._state === "connecting") return;
    void this.open();
  }

  /**
   * Closes the connection for good: no reconnect, every queued or unanswered request
   * rejects with `closed`, every subscription ends, no timer is left behind.
   */
  close(): void {
    if (this.closed) return;
    this.terminate(new FanoutError("closed", "the client was closed"), 1000);
  }

  /** Subscribes to `channel`. One subscription per channel per client. */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.closed) throw new FanoutError("closed", "the client is closed");
    if (this.subs.has(channel)) {
      throw new FanoutError("already_subscribed", `already subscribed to ${JSON.stringify(channel)}`, { channel });
    }
    const sub = new Subscription(this, channel, options);
    this.subs.set(channel, sub);
    if (this._state === "connected") this.sendSubscribe(sub);
    else this.connect();
    return sub;
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /** @internal */
  _unsubscribe(sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    this.answered(sub.channel);
    const wasSent = this._state === "connected";
    sub._ended(new FanoutError("unsubscribed", "unsubscribed before the server confirmed", { channel: sub.channel }), false);
    if (wasSent) {
      this.pendingUnsubs.set(sub.channel, (this.pendingUnsubs.get(sub.channel) ?? 0) + 1);
      this.send({ type: "unsubscribe", channel: sub.channel });
    }
  }

  /** Publishes `data` on `channel`; resolves when the broker accepted it (`published`). */
  publish(channel: string, data: unknown): Promise<void> {
    if (data === undefined) return Promise.reject(new FanoutError("bad_request", "data must be a JSON value"));
    return this.request("publish", { type: "publish", channel, data }).then(() => undefined);
  }

  /** The last `limit` messages of a history channel, or those after `since`. */
  history(channel: string, options: { limit?: number; since?: string } = {}): Promise<HistoryResult> {
    const frame: Record<string, unknown> = { type: "history", channel };
    if (options.limit !== undefined) frame.limit = options.limit;
    if (options.since !== undefined) frame.since = options.since;
    return this.request("history", frame).then((m) => ({
      channel: m.channel,
      messages: Array.isArray(m.messages) ? m.messages : [],
    }));
  }

  /** Whether `user` is online, and its connections on every node. */
  presence(user: string): Promise<PresenceResult> {
    return this.request("presence", { type: "presence", user }, user).then((m) => ({
      user: m.user,
      online: !!m.online,
      connections: Array.isArray(m.connections) ? m.connections : [],
    }));
  }

  private request(kind: RequestKind, frame: Record<string, unknown>, user?: string): Promise<any> {
    if (this.closed) return Promise.reject(new FanoutError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const req: Request = { kind, frame, resolve, reject, user };
      if (this.live) {
        this.sendRequest(req);
      } else {
        if (this.outbox.length >= this.opts.maxQueue) {
          reject(new FanoutError("queue_full", `more than ${this.opts.maxQueue} requests waiting for a connection`));
          return;
        }
        this.outbox.push(req);
        if (this._state !== "connected") this.connect();
      }
    });
  }

  private sendRequest(req: Request): void {
    const id = this.nextId++;
    this.inflight.set(id, req);
    this.send({ ...req.frame, id });
  }

  private sendSubscribe(sub: Subscription): void {
    const frame: Record<string, unknown> = { type: "subscribe", channel: sub.channel };
    sub._sentSince = sub.offset !== undefined;
    if (sub.offset !== undefined) frame.since = sub.offset;
    this.send(frame);
  }

  private send(frame: Record<string, unknown>): void {
    this.ws?.send(JSON.stringify(frame));
  }

  // ---- connection lifecycle -------------------------------------------------------

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.setState("connecting");
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (gen !== this.generation) return;
      const ws = this.ws;
      this.emit("error", new FanoutError("transport", `no connection within ${this.opts.connectTimeout} ms`));
      if (ws) {
        this.detach(ws);
        try {
          ws.close();
        } catch {
          /* ignore */
        }
      }
      this.lost(0, "connect timeout");
    }, this.opts.connectTimeout);

    let token: string | undefined;
    if (this.opts.token !== undefined) {
      try {
        token = await this.currentToken();
      } catch (e) {
        if (gen !== this.generation) return;
        this.emit("error", new FanoutError("token", `token function failed: ${(e as Error)?.message ?? e}`));
        this.lost(0, "token function failed");
        return;
      }
      if (gen !== this.generation) return; // closed (or timed out) meanwhile
    }

    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.url);
    } catch (e) {
      this.emit("error", new FanoutError("transport", `cannot open ${this.url}: ${(e as Error)?.message ?? e}`));
      this.lost(0, "cannot open");
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      if (token !== undefined) {
        this.authenticating = true;
        this.send({ type: "auth", token });
      } else {
        this.connected();
      }
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data !== "string") return; // the protocol is text frames only
      let msg: any;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.emit("error", new FanoutError("bad_frame", "the server sent a frame that is not JSON"));
        return;
      }
      if (msg && typeof msg === "object" && !Array.isArray(msg)) this.handle(msg);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.detach(ws);
      this.lost(ev.code, ev.reason ?? "");
    };
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    if (this.ws === ws) this.ws = null;
  }

  /** A token to authenticate with: the cached one unless stale or about to expire. */
  private async currentToken(): Promise<string> {
    const src = this.opts.token!;
    if (typeof src === "string") return src;
    const fresh =
      this.token !== undefined &&
      !this.tokenStale &&
      (this.tokenExp === undefined || this.tokenExp * 1000 - Date.now() > 2000);
    if (fresh) return this.token!;
    const t = await src();
    if (typeof t !== "string" || t === "") throw new Error("the token function returned no token");
    this.token = t;
    this.tokenExp = decodeJwtExp(t);
    this.tokenStale = false;
    return t;
  }

  private connected(): void {
    if (this.connectTimer) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    this.authenticating = false;
    this.attempt = 0;
    const reconnected = this.everConnected;
    this.everConnected = true;
    this._state = "connected";
    this.pendingUnsubs.clear();
    this.awaiting.clear();
    for (const sub of this.subs.values()) {
      this.sendSubscribe(sub);
      this.awaiting.add(sub.channel);
    }
    // Queued publishes go out once the subscriptions are live again, so a client that
    // publishes on a channel it is subscribed to sees its own message after a reconnect.
    if (this.awaiting.size === 0) this.flushOutbox();
    else
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flushOutbox();
      }, this.opts.connectTimeout);
    this.scheduleRefresh();
    this.emit("state", "connected");
    this.emit("connected", { reconnected });
  }

  private answered(channel: string): void {
    if (this.awaiting.delete(channel) && this.awaiting.size === 0 && !this.live) this.flushOutbox();
  }

  private flushOutbox(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.awaiting.clear();
    this.live = true;
    const queued = this.outbox;
    this.outbox = [];
    for (const req of queued) this.sendRequest(req);
  }

  /** The socket is gone (closed, failed, timed out): decide whether and when to reconnect. */
  private lost(code: number, reason: string): void {
    if (this.closed) return;
    this.generation++;
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      try {
        ws.close();
      } catch {
        /* ignore */
      }
    }
    this.clearConnTimers();
    this.authenticating = false;
    this.live = false;
    this.awaiting.clear();
    this.failInflight(new FanoutError("disconnected", `connection lost (${code} ${reason})`.trim(), { closeCode: code }));
    for (const sub of this.subs.values()) if (sub._state === "subscribed") sub._state = "subscribing";

    const tokenFn = typeof this.opts.token === "function";
    if (code === CloseCodes.DISCONNECTED_BY_SERVER) {
      const err = new FanoutError("disconnected_by_server", reason || "disconnected by server", { closeCode: code });
      this.emit("disconnected", { code, reason, reconnect: false });
      this.emit("error", err);
      this.terminate(err);
      return;
    }
    if ((code === CloseCodes.UNAUTHORIZED || code === CloseCodes.TOKEN_EXPIRED) && !tokenFn) {
      const err = new FanoutError(
        code === CloseCodes.UNAUTHORIZED ? "unauthorized" : "token_expired",
        `${reason || "authentication failed"}; a fixed token cannot be renewed (pass a token function)`,
        { closeCode: code },
      );
      this.emit("disconnected", { code, reason, reconnect: false });
      this.emit("error", err);
      this.terminate(err);
      return;
    }
    if (code === CloseCodes.UNAUTHORIZED || code === CloseCodes.TOKEN_EXPIRED) this.tokenStale = true;
    if (code === CloseCodes.SLOW_CONSUMER) {
      this.emit("error", new FanoutError("slow_consumer", "closed by the server as a slow consumer (4000)", { closeCode: code }));
    }
    let delay: number;
    if (code === CloseCodes.GOING_AWAY && this.attempt === 0) {
      delay = 0; // the node is shutting down: go to another one at once
    } else {
      delay = backoffDelay(this.attempt, this.opts.minReconnectDelay, this.opts.maxReconnectDelay, this.opts.random);
    }
    this.attempt++;
    this.setState("disconnected");
    this.emit("disconnected", { code, reason, reconnect: true, delay });
    if (this.closed) return; // a listener closed the client
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open();
    }, delay);
  }

  private clearConnTimers(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.connectTimer = this.refreshTimer = this.flushTimer = null;
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
  }

  /** Unanswered requests: publishes reject (they may or may not have been published); queries are asked again. */
  private failInflight(err: FanoutError): void {
    const retry: Request[] = [];
    for (const req of this.inflight.values()) {
      if (req.kind === "publish") req.reject(err);
      else retry.push(req);
    }
    this.inflight.clear();
    this.outbox = retry.concat(this.outbox);
  }

  private terminate(err: FanoutError, closeCode?: number): void {
    this.closed = true;
    this.generation++;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.clearConnTimers();
    const ws = this.ws;
    if (ws) {
      this.detach(ws);
      try {
        ws.close(closeCode ?? 1000);
      } catch {
        /* ignore */
      }
    }
    for (const req of this.inflight.values()) req.reject(err);
    this.inflight.clear();
    for (const req of this.outbox) req.reject(err);
    this.outbox = [];
    const subs = [...this.subs.values()];
    this.subs.clear();
    for (const sub of subs) sub._ended(err, true);
    this.setState("closed");
  }

  // ---- token refresh --------------------------------------------------------------

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (typeof this.opts.token !== "function" || this.tokenExp === undefined) return;
    const remaining = this.tokenExp * 1000 - Date.now();
    // A token that has (almost) expired already is not refreshed in a loop: the server
    // closes with 4003 and the reconnect fetches a new one.
    if (remaining < 1000) return;
    const margin = Math.min(this.opts.refreshMargin, Math.max(0, remaining) / 4);
    const delay = Math.max(0, remaining - margin);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refresh();
    }, delay);
  }

  private async refresh(): Promise<void> {
    const gen = this.generation;
    const fn = this.opts.token as () => string | Promise<string>;
    let t: string;
    try {
      t = await fn();
      if (typeof t !== "string" || t === "") throw new Error("the token function returned no token");
    } catch (e) {
      if (gen !== this.generation) return;
      this.emit("error", new FanoutError("token", `token refresh failed: ${(e as Error)?.message ?? e}`));
      // Try again while the token lasts; at exp the server closes with 4003 and we reconnect.
      const remaining = (this.tokenExp ?? 0) * 1000 - Date.now();
      if (remaining > 1000) {
        this.refreshTimer = setTimeout(() => {
          this.refreshTimer = null;
          void this.refresh();
        }, Math.min(5000, remaining / 2));
      }
      return;
    }
    if (gen !== this.generation || this._state !== "connected") {
      // Keep it for the next connection.
      this.token = t;
      this.tokenExp = decodeJwtExp(t);
      this.tokenStale = false;
      return;
    }
    this.token = t;
    this.tokenExp = decodeJwtExp(t);
    this.tokenStale = false;
    this.send({ type: "auth", token: t });
    this.scheduleRefresh();
  }

  // ---- incoming frames ------------------------------------------------------------

  private handle(msg: any): void {
    const type = msg.type;
    if (type === undefined) {
      if (typeof msg.channel === "string" && "data" in msg) {
        const sub = this.subs.get(msg.channel);
        if (sub) sub._message(msg.data, typeof msg.offset === "string" ? msg.offset : undefined);
      }
      return;
    }
    switch (type) {
      case "authenticated":
        if (this.authenticating) this.connected();
        return;
      case "subscribed": {
        const sub = this.subs.get(msg.channel);
        if (sub) sub._subscribed(typeof msg.offset === "string" ? msg.offset : undefined);
        this.answered(msg.channel);
        return;
      }
      case "unsubscribed": {
        const n = this.pendingUnsubs.get(msg.channel) ?? 0;
        if (n > 0) {
          if (n === 1) this.pendingUnsubs.delete(msg.channel);
          else this.pendingUnsubs.set(msg.channel, n - 1);
          return;
        }
        // Not asked for: the server dropped it (a refreshed token no longer allows it).
        const sub = this.subs.get(msg.channel);
        if (sub) {
          this.subs.delete(msg.channel);
          const err = new FanoutError("unsubscribed", "the server ended the subscription", { channel: msg.channel });
          sub._opts.onError?.(err);
          this.emit("error", err);
          sub._ended(err, true);
        }
        return;
      }
      case "gap": {
        this.subs.get(msg.channel)?._opts.onGap?.();
        return;
      }
      case "published":
      case "history": {
        const req = this.takeRequest(msg.id);
        if (req) req.resolve(msg);
        return;
      }
      case "presence": {
        const req = this.takeRequest(msg.id) ?? this.takePresence(msg.user);
        if (req) req.resolve(msg);
        return;
      }
      case "error":
        this.onError(msg);
        return;
      default:
        return; // unknown types are ignored (newer servers)
    }
  }

  private takeRequest(id: unknown): Request | undefined {
    if (typeof id !== "number") return undefined;
    const req = this.inflight.get(id);
    if (req) this.inflight.delete(id);
    return req;
  }

  /** Presence answers carry no id: the oldest unanswered query about that user (or any, for errors). */
  private takePresence(user: unknown): Request | undefined {
    for (const [id, req] of this.inflight) {
      if (req.kind === "presence" && (user === undefined || req.user === user)) {
        this.inflight.delete(id);
        return req;
      }
    }
    return undefined;
  }

  private onError(msg: any): void {
    const code = typeof msg.code === "string" ? msg.code : "error";
    const text = typeof msg.message === "string" ? msg.message : code;
    const channel = typeof msg.channel === "string" ? msg.channel : undefined;
    const err = new FanoutError(code, text, channel === undefined ? {} : { channel });
    if (msg.id !== undefined) {
      const req = this.takeRequest(msg.id);
      if (req) {
        req.reject(err);
        return;
      }
    }
    if (channel !== undefined) {
      const sub = this.subs.get(channel);
      if (sub && sub._state === "subscribing" && code === "rate_limited" && this.ws) {
        // Too many history reads at once (subscribe with since, e.g. many history channels
        // after a reconnect): ask again a little later on this connection.
        const gen = this.generation;
        const timer = setTimeout(() => {
          this.retryTimers.delete(timer);
          if (gen === this.generation && this.subs.get(channel) === sub && sub._state === "subscribing") this.sendSubscribe(sub);
        }, Math.floor(1000 + this.opts.random() * 1000));
        this.retryTimers.add(timer);
        return;
      }
      if (sub && sub._state === "subscribing" && code === "bad_request" && sub._sentSince && this.ws) {
        // `since` refused: the channel has no history (any more). Resubscribe without it
        // and tell the application that it may have missed messages.
        sub.offset = undefined;
        sub._opts.onGap?.();
        this.sendSubscribe(sub);
        return;
      }
      if (sub && sub._state === "subscribing") {
        this.subs.delete(channel);
        sub._opts.onError?.(err);
        if (sub._everSubscribed) this.emit("error", err);
        sub._ended(err, true);
        this.answered(channel);
        return;
      }
      this.emit("error", err);
      return;
    }
    if (this.authenticating) {
      // auth sent to a node without auth: it answers bad_request and works without it.
      this.emit("error", err);
      this.connected();
      return;
    }
    if ((code === "forbidden" || code === "unavailable") && msg.id === undefined) {
      const req = this.takePresence(undefined);
      if (req) {
        req.reject(err);
        return;
      }
    }
    if (code === "slow_consumer") {
      // drop-oldest policy: deliveries were dropped on this connection.
      for (const sub of this.subs.values()) sub._opts.onGap?.();
    }
    this.emit("error", err);
  }
}

export default FanoutClient;
