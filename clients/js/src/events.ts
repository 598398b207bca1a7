/**
 * The client's event listeners (`state`, `error`, `connected`, `disconnected`).
 *
 * Owns the listener sets and the dispatch: a listener's exception is rethrown from a
 * timer, so it never breaks the caller's bookkeeping. Never decides when to emit.
 */

import type { ClientEvents } from "./types.js";

type Listener<K extends keyof ClientEvents> = ClientEvents[K];

export class Listeners {
  private readonly listeners: { [K in keyof ClientEvents]?: Set<Listener<K>> } = {};

  add<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): void {
    let set = this.listeners[event] as Set<Listener<K>> | undefined;
    if (!set) {
      set = new Set();
      (this.listeners as any)[event] = set;
    }
    set.add(fn);
  }

  remove<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): void {
    (this.listeners[event] as Set<Listener<K>> | undefined)?.delete(fn);
  }

  emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
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
}
