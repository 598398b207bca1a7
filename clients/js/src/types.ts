/**
 * The public types of fanout-client, `FanoutError` and the server's close codes.
 *
 * Owns the shapes users see (options, callbacks, results, events) and the error class.
 * Never holds state or behaviour beyond constructing an error.
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
