/**
 * One channel subscription: its `ready` promise, its state, and the offset bookkeeping
 * (the last offset seen, sent as `since` on resubscribe; the replay/live hand-over
 * duplicate dropped) behind the application's callbacks.
 *
 * Never sends a frame or touches the socket: the client does, and calls the `_…` hooks.
 */

import type { FanoutError, SubscribeOptions } from "./types.js";

type SubState = "subscribing" | "subscribed" | "unsubscribed";

/**
 * What a subscription needs of the connection that made it (`Connection`): a way to end
 * it. Declared here, so that subscription.ts imports neither the connection nor the client.
 * @internal
 */
export interface SubscriptionOwner {
  unsubscribe(sub: Subscription): void;
}

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
    private readonly owner: SubscriptionOwner,
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
    this.owner.unsubscribe(this);
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
