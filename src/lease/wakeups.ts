/**
 * Wake-ups between the lease Lockers of one process: a release wakes this process's waiters on that
 * key at once, instead of at their next poll. Waiters in other processes find out by polling: leases
 * must work where no session can LISTEN. Keyed by table, so Lockers on other tables are not woken.
 */
import { EventEmitter } from "node:events";
import type { Wakeups } from "../contract/backend.js";
import type { LockKey } from "../key.js";

const sleepers = new Map<string, Set<() => void>>();
const topics = new EventEmitter().setMaxListeners(0);

/**
 * Wakes the longest-sleeping waiter of this process on `key`. One, not all: woken together, they would
 * all send their grant at once, and all but one would queue on the key's row only to be refused
 * (measured: 8 waiters woken together made an in-process hand-over slower than polling).
 */
export function wake(table: string, key: LockKey): void {
  const first = sleepers.get(`${table} ${key.identity}`)?.values().next().value;
  first?.();
}

/** Resolves after `ms`, or on a wake for `key`; rejects with `signal.reason` on abort. */
export function pause(table: string, key: LockKey, ms: number, signal: AbortSignal): Promise<void> {
  const name = `${table} ${key.identity}`;
  return new Promise((resolve, reject) => {
    const set = sleepers.get(name) ?? new Set();
    sleepers.set(name, set);
    const settle = (outcome: () => void) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      set.delete(woken);
      if (set.size === 0) sleepers.delete(name);
      outcome();
    };
    const woken = () => settle(resolve);
    const onAbort = () => settle(() => reject(signal.reason));
    const timer = setTimeout(woken, ms);
    set.add(woken);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A semaphore's wake-ups among this process's lease Lockers on `table`; other processes poll. */
export function localWakeups(table: string): Wakeups {
  return {
    subscribe: async (topic, wakeUp) => {
      const name = `${table} ${topic}`;
      topics.on(name, wakeUp);
      return () => topics.off(name, wakeUp);
    },
    notify: async (topic) => {
      topics.emit(`${table} ${topic}`);
    },
  };
}
