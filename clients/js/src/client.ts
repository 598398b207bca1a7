/**
 * `FanoutClient`, the public API: each method's arguments turned into a call on the
 * connection state machine, and the server's answers shaped into the results users see.
 *
 * Owns no connection state: the socket, subscriptions, queues, timers and events belong
 * to the `Connection` (connection.ts). Never sends a frame itself.
 */

import { Connection } from "./connection.js";
import type { Subscription } from "./subscription.js";
import {
  FanoutError,
  type ClientEvents,
  type FanoutClientOptions,
  type HistoryResult,
  type PresenceResult,
  type State,
  type SubscribeOptions,
} from "./types.js";

/**
 * The client. `new FanoutClient(url, options)`; see README.md for the API and the
 * reconnect policy.
 */
export class FanoutClient {
  readonly url: string;
  private readonly conn: Connection;

  constructor(url: string, options: FanoutClientOptions = {}) {
    this.url = url;
    this.conn = new Connection(url, options);
  }

  /** The current connection state. */
  get state(): State {
    return this.conn.state;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): () => void {
    this.conn.listeners.add(event, fn);
    return () => this.off(event, fn);
  }

  off<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): void {
    this.conn.listeners.remove(event, fn);
  }

  /** Opens the connection now (otherwise the first subscribe/publish/history/presence does). */
  connect(): void {
    this.conn.connect();
  }

  /**
   * Closes the connection for good: no reconnect, every queued or unanswered request
   * rejects with `closed`, every subscription ends, no timer is left behind.
   */
  close(): void {
    this.conn.close();
  }

  /** Subscribes to `channel`. One subscription per channel per client. */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    return this.conn.subscribe(channel, options);
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this.conn.getSubscription(channel);
  }

  /** Publishes `data` on `channel`; resolves when the broker accepted it (`published`). */
  publish(channel: string, data: unknown): Promise<void> {
    if (data === undefined) return Promise.reject(new FanoutError("bad_request", "data must be a JSON value"));
    return this.conn.request("publish", { type: "publish", channel, data }).then(() => undefined);
  }

  /** The last `limit` messages of a history channel, or those after `since`. */
  history(channel: string, options: { limit?: number; since?: string } = {}): Promise<HistoryResult> {
    const frame: Record<string, unknown> = { type: "history", channel };
    if (options.limit !== undefined) frame.limit = options.limit;
    if (options.since !== undefined) frame.since = options.since;
    return this.conn.request("history", frame).then((m) => ({
      channel: m.channel,
      messages: Array.isArray(m.messages) ? m.messages : [],
    }));
  }

  /** Whether `user` is online, and its connections on every node. */
  presence(user: string): Promise<PresenceResult> {
    return this.conn.request("presence", { type: "presence", user }, user).then((m) => ({
      user: m.user,
      online: !!m.online,
      connections: Array.isArray(m.connections) ? m.connections : [],
    }));
  }
}
