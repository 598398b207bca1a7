/**
 * fanout-client: a browser and Node.js client for the fanout WebSocket pub/sub server.
 *
 * One connection per client. It connects lazily (or on `connect()`), authenticates with
 * `{"type":"auth","token":…}` as its first message, resubscribes every live subscription
 * after each reconnect (with `since` = the last offset seen on history channels), matches
 * publish acks by `id`, and refreshes its token before `exp`. See README.md.
 *
 * This file owns the package's public API: it only re-exports it from the modules that
 * implement it (client.ts, connection.ts, subscription.ts, token.ts, backoff.ts,
 * requests.ts, events.ts, socket.ts, types.ts) and never implements anything itself.
 */

export type {
  State,
  WebSocketLike,
  WebSocketConstructor,
  TokenSource,
  FanoutClientOptions,
  MessageContext,
  SubscribeOptions,
  HistoryMessage,
  HistoryResult,
  PresenceConnection,
  PresenceResult,
  DisconnectInfo,
  ClientEvents,
} from "./types.js";
export { FanoutError, CloseCodes } from "./types.js";
export { decodeJwtExp } from "./token.js";
export { backoffDelay } from "./backoff.js";
export { Subscription } from "./subscription.js";
import { FanoutClient } from "./client.js";
export { FanoutClient };
export default FanoutClient;
