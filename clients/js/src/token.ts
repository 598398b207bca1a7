/**
 * Token handling: reading a JWT's `exp`, caching the token, fetching a fresh one from the
 * token function when stale or about to expire, and the refresh timer that re-sends
 * `auth` on the live connection before `exp`.
 *
 * Never opens, closes or reconnects the socket: the client decides that (a 4001/4003
 * close only marks the cached token stale here).
 */

import { FanoutError, type TokenSource } from "./types.js";

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

/** What the token keeper needs from the client. */
export interface TokenHost {
  /** The connection generation: a refresh started on an older connection sends nothing. */
  generation(): number;
  /** Whether the client is connected (so a refreshed token can be sent at once). */
  isConnected(): boolean;
  /** Sends `{"type":"auth","token":…}` on the current connection. */
  sendAuth(token: string): void;
  /** Reports an error on the client's `error` event. */
  error(err: FanoutError): void;
}

/** The cached token, its `exp`, and the refresh timer. */
export class TokenKeeper {
  private token: string | undefined;
  private tokenExp: number | undefined;
  private tokenStale = false;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly source: TokenSource | undefined,
    private readonly refreshMargin: number,
    private readonly host: TokenHost,
  ) {
    if (typeof source === "string") {
      this.token = source;
      this.tokenExp = decodeJwtExp(source);
    }
  }

  /** The server refused the token (4001/4003): the next `current()` fetches a new one. */
  markStale(): void {
    this.tokenStale = true;
  }

  /** A token to authenticate with: the cached one unless stale or about to expire. */
  async current(): Promise<string> {
    const src = this.source!;
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

  /** Stops the refresh timer (connection lost or client closed). */
  cancel(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
  }

  /** Arms the refresh timer for a token function's token with a known `exp` (on connect and after each refresh). */
  schedule(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (typeof this.source !== "function" || this.tokenExp === undefined) return;
    const remaining = this.tokenExp * 1000 - Date.now();
    // A token that has (almost) expired already is not refreshed in a loop: the server
    // closes with 4003 and the reconnect fetches a new one.
    if (remaining < 1000) return;
    const margin = Math.min(this.refreshMargin, Math.max(0, remaining) / 4);
    const delay = Math.max(0, remaining - margin);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      void this.refresh();
    }, delay);
  }

  private async refresh(): Promise<void> {
    const gen = this.host.generation();
    const fn = this.source as () => string | Promise<string>;
    let t: string;
    try {
      t = await fn();
      if (typeof t !== "string" || t === "") throw new Error("the token function returned no token");
    } catch (e) {
      if (gen !== this.host.generation()) return;
      this.host.error(new FanoutError("token", `token refresh failed: ${(e as Error)?.message ?? e}`));
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
    if (gen !== this.host.generation() || !this.host.isConnected()) {
      // Keep it for the next connection.
      this.token = t;
      this.tokenExp = decodeJwtExp(t);
      this.tokenStale = false;
      return;
    }
    this.token = t;
    this.tokenExp = decodeJwtExp(t);
    this.tokenStale = false;
    this.host.sendAuth(t);
    this.schedule();
  }
}
