/**
 * Requests that expect an answer (publish, history, presence): the outbox of those
 * waiting for a live connection, and those sent, matched to their answers by `id`
 * (presence answers carry none: the oldest query about that user).
 *
 * Never decides when the connection is live, how many may wait, or whether to
 * reconnect: the client does. Sends only through the function it is given.
 */

import type { FanoutError } from "./types.js";

export type RequestKind = "publish" | "history" | "presence";

export interface Request {
  kind: RequestKind;
  frame: Record<string, unknown>;
  resolve: (v: any) => void;
  reject: (e: FanoutError) => void;
  user?: string;
}

export class Requests {
  private nextId = 1;
  private outbox: Request[] = [];
  private readonly inflight = new Map<number, Request>();

  constructor(private readonly send: (frame: Record<string, unknown>) => void) {}

  /** How many wait in the outbox. */
  get queued(): number {
    return this.outbox.length;
  }

  /** Puts `req` in the outbox, to be sent by `flush()`. */
  enqueue(req: Request): void {
    this.outbox.push(req);
  }

  /** Sends `req` now with the next id. */
  sendNow(req: Request): void {
    const id = this.nextId++;
    this.inflight.set(id, req);
    this.send({ ...req.frame, id });
  }

  /** Sends everything in the outbox, oldest first. */
  flush(): void {
    const queued = this.outbox;
    this.outbox = [];
    for (const req of queued) this.sendNow(req);
  }

  /** The unanswered request with this id, removed. */
  take(id: unknown): Request | undefined {
    if (typeof id !== "number") return undefined;
    const req = this.inflight.get(id);
    if (req) this.inflight.delete(id);
    return req;
  }

  /** Presence answers carry no id: the oldest unanswered query about that user (or any, for errors). */
  takePresence(user: unknown): Request | undefined {
    for (const [id, req] of this.inflight) {
      if (req.kind === "presence" && (user === undefined || req.user === user)) {
        this.inflight.delete(id);
        return req;
      }
    }
    return undefined;
  }

  /** Unanswered requests: publishes reject (they may or may not have been published); queries are asked again. */
  failInflight(err: FanoutError): void {
    const retry: Request[] = [];
    for (const req of this.inflight.values()) {
      if (req.kind === "publish") req.reject(err);
      else retry.push(req);
    }
    this.inflight.clear();
    this.outbox = retry.concat(this.outbox);
  }

  /** The client is closed: every unanswered, then every queued request rejects. */
  rejectAll(err: FanoutError): void {
    for (const req of this.inflight.values()) req.reject(err);
    this.inflight.clear();
    for (const req of this.outbox) req.reject(err);
    this.outbox = [];
  }
}
