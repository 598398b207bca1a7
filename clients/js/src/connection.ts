/**
 * The client's connection state machine behind `FanoutClient`: open (token, socket,
 * auth), the live connection (resubscribe, then queued requests), loss and reconnect
 * with backoff, close, and the meaning of each frame the server sends.
 *
 * Owns the socket, the table of subscriptions and the connection's timers (connect,
 * reconnect, outbox flush, resubscribe retries). Never holds the token cache or its
 * refresh timer, the request queues, the listener sets or a subscription's offsets itself
 * (token.ts, requests.ts, events.ts, subscription.ts), never computes the backoff
 * (backoff.ts), and never shapes the public API's arguments or results (client.ts).
 */

import { backoffDelay } from "./backoff.js";
import { Listeners } from "./events.js";
import { Requests, type RequestKind, type Request } from "./requests.js";
import { attach, closeQuietly, detach } from "./socket.js";
import { Subscription } from "./subscription.js";
import { TokenKeeper } from "./token.js";
import {
  CloseCodes,
  FanoutError,
  type ClientEvents,
  type FanoutClientOptions,
  type State,
  type SubscribeOptions,
  type TokenSource,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./types.js";

/** The state machine of one `FanoutClient`; its public methods are the client's. */
export class Connection {
  private readonly url: string;
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
  private readonly subs = new Map<string, Subscription>();
  private readonly pendingUnsubs = new Map<string, number>();
  private readonly requests = new Requests((frame) => this.send(frame));
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  /** Resubscribes put off after a `rate_limited` (history reads are rate limited per connection). */
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  /** Subscribes of this connection not answered yet: queued requests wait for them. */
  private readonly awaiting = new Set<string>();
  /** Connected, and every resubscribe answered: requests go straight out. */
  private live = false;
  private readonly tokens: TokenKeeper;
  private generation = 0;
  readonly listeners = new Listeners();

  constructor(url: string, options: FanoutClientOptions) {
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
    this.tokens = new TokenKeeper(options.token, this.opts.refreshMargin, {
      generation: () => this.generation,
      isConnected: () => this._state === "connected",
      sendAuth: (token) => this.send({ type: "auth", token }),
      error: (err) => this.emit("error", err),
    });
  }

  /** The current connection state. */
  get state(): State {
    return this._state;
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    this.listeners.emit(event, ...args);
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
  subscribe(channel: string, options: SubscribeOptions): Subscription {
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

  /** `sub.unsubscribe()`. */
  unsubscribe(sub: Subscription): void {
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

  /** Sends a request now, or queues it until the connection is live; resolves with the answer frame. */
  request(kind: RequestKind, frame: Record<string, unknown>, user?: string): Promise<any> {
    if (this.closed) return Promise.reject(new FanoutError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const req: Request = { kind, frame, resolve, reject, user };
      if (this.live) {
        this.requests.sendNow(req);
      } else {
        if (this.requests.queued >= this.opts.maxQueue) {
          reject(new FanoutError("queue_full", `more than ${this.opts.maxQueue} requests waiting for a connection`));
          return;
        }
        this.requests.enqueue(req);
        if (this._state !== "connected") this.connect();
      }
    });
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
        closeQuietly(ws);
      }
      this.lost(0, "connect timeout");
    }, this.opts.connectTimeout);

    let token: string | undefined;
    if (this.opts.token !== undefined) {
      try {
        token = await this.tokens.current();
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
    attach(ws, {
      open: () => {
        if (this.ws !== ws) return;
        if (token !== undefined) {
          this.authenticating = true;
          this.send({ type: "auth", token });
        } else {
          this.connected();
        }
      },
      frame: (msg) => {
        if (this.ws === ws) this.handle(msg);
      },
      badFrame: () => {
        if (this.ws === ws) this.emit("error", new FanoutError("bad_frame", "the server sent a frame that is not JSON"));
      },
      close: (code, reason) => {
        if (this.ws !== ws) return;
        this.detach(ws);
        this.lost(code, reason);
      },
    });
  }

  private detach(ws: WebSocketLike): void {
    detach(ws);
    if (this.ws === ws) this.ws = null;
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
    this.tokens.schedule();
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
    this.requests.flush();
  }

  /** The socket is gone (closed, failed, timed out): decide whether and when to reconnect. */
  private lost(code: number, reason: string): void {
    if (this.closed) return;
    this.generation++;
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      closeQuietly(ws);
    }
    this.clearConnTimers();
    this.authenticating = false;
    this.live = false;
    this.awaiting.clear();
    this.requests.failInflight(new FanoutError("disconnected", `connection lost (${code} ${reason})`.trim(), { closeCode: code }));
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
    if (code === CloseCodes.UNAUTHORIZED || code === CloseCodes.TOKEN_EXPIRED) this.tokens.markStale();
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
    this.tokens.cancel();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.connectTimer = this.flushTimer = null;
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
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
      closeQuietly(ws, closeCode ?? 1000);
    }
    this.requests.rejectAll(err);
    const subs = [...this.subs.values()];
    this.subs.clear();
    for (const sub of subs) sub._ended(err, true);
    this.setState("closed");
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
        const req = this.requests.take(msg.id);
        if (req) req.resolve(msg);
        return;
      }
      case "presence": {
        const req = this.requests.take(msg.id) ?? this.requests.takePresence(msg.user);
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

  private onError(msg: any): void {
    const code = typeof msg.code === "string" ? msg.code : "error";
    const text = typeof msg.message === "string" ? msg.message : code;
    const channel = typeof msg.channel === "string" ? msg.channel : undefined;
    const err = new FanoutError(code, text, channel === undefined ? {} : { channel });
    if (msg.id !== undefined) {
      const req = this.requests.take(msg.id);
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
      const req = this.requests.takePresence(undefined);
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
