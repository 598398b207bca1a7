/**
 * The WebSocket wiring: a socket's events turned into calls (text frames parsed as JSON
 * objects), a socket detached so its late events are ignored, a close that never throws.
 *
 * Never decides what a frame means, or whether to reconnect: the client does.
 */

import type { WebSocketLike } from "./types.js";

export interface SocketEvents {
  open(): void;
  /** A text frame holding a JSON object. */
  frame(msg: any): void;
  /** A text frame that is not JSON. */
  badFrame(): void;
  close(code: number, reason: string): void;
}

/** Wires `ws`'s events to `on`. Binary frames and JSON that is not an object are ignored. */
export function attach(ws: WebSocketLike, on: SocketEvents): void {
  ws.onopen = () => on.open();
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return; // the protocol is text frames only
    let msg: any;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      on.badFrame();
      return;
    }
    if (msg && typeof msg === "object" && !Array.isArray(msg)) on.frame(msg);
  };
  ws.onerror = () => {
    /* a close event follows */
  };
  ws.onclose = (ev) => on.close(ev.code, ev.reason ?? "");
}

/** Unwires `ws`: none of its events reaches the client any more. */
export function detach(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}

/** Closes `ws` (with `code` if given), ignoring any exception. */
export function closeQuietly(ws: WebSocketLike, code?: number): void {
  try {
    if (code === undefined) ws.close();
    else ws.close(code);
  } catch {
    /* ignore */
  }
}
