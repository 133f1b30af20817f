/**
 * A counting semaphore across processes: `permits` slots, each an advisory lock. Slot i of the
 * semaphore named N is the key `hashKey("pglock:semaphore:" + N + ":" + i)`, i from 0 to
 * permits - 1; this derivation is stable, so processes in any language can share a semaphore.
 */

import type { Wakeups } from "../contract/backend.js";
import type { LockHandle } from "../contract/handle.js";
import { InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKey, lockKey } from "../key.js";
import { linkSignals, timeoutSignal } from "../signals.js";
import { checkInteger, checkMs, checkSignal, optionsObject } from "../validate.js";

/** What a semaphore needs from a Locker: try-locks on its slot keys. */
export interface SlotLocker {
  tryAcquire(key: LockKey, options?: { signal?: AbortSignal }): Promise<LockHandle | null>;
}

/** A held semaphore slot. */
export interface SemaphoreHandle extends LockHandle {
  /** Which slot, from 0 to permits - 1. */
  readonly slot: number;
}

/** Options of a semaphore's `acquire`. */
export interface SemaphoreAcquireOptions {
  /** Give up after this many ms with `LockTimeoutError`. */
  timeout?: number;
  /** Aborting it gives up with `signal.reason`. */
  signal?: AbortSignal;
}

/** Waiters poll this often even without a wake-up: a holder that dies sends no NOTIFY. */
const FALLBACK_POLL_MS = 500;

/**
 * A counting semaphore across processes: at most `permits` holders. Make one with a Locker's
 * `semaphore(name, permits)`; every Locker of the same kind that uses the name shares it.
 */
export class Semaphore {
  /** The name every process uses for this semaphore. */
  readonly name: string;
  /** How many may hold it at once. */
  readonly permits: number;
  readonly #locker: SlotLocker;
  readonly #wakeups: Wakeups;
  readonly #slots: LockKey[];
  readonly #topic: string;

  /** @internal a Locker's `semaphore(name, permits)` */
  static create(locker: SlotLocker, wakeups: Wakeups, name: string, permits: number): Semaphore {
    return new Semaphore(locker, wakeups, name, permits);
  }

  /** Use a Locker's `semaphore(name, permits)`. */
  private constructor(locker: SlotLocker, wakeups: Wakeups, name: string, permits: number) {
    if (typeof name !== "string" || name.length === 0) {
      throw new InvalidArgumentError(`semaphore: name must be a non-empty string, got ${describe(name)}`);
    }
    checkInteger(permits, "semaphore", "permits", 1);
    this.#locker = locker;
    this.#wakeups = wakeups;
    this.name = name;
    this.permits = permits;
    this.#slots = Array.from({ length: permits }, (_, slot) => Semaphore.slotKey(name, slot));
    this.#topic = `semaphore:${String(lockKey(name).id)}`;
  }

  /** The lock key of slot `slot` of the semaphore `name`. */
  static slotKey(name: string, slot: number): LockKey {
    return lockKey(`pglock:semaphore:${name}:${slot}`);
  }

  /** A free slot now, or null. */
  async tryAcquire(options: { signal?: AbortSignal } = {}): Promise<SemaphoreHandle | null> {
    optionsObject(options, "semaphore.tryAcquire", ["signal"]);
    return this.#tryEverySlot(checkSignal(options.signal, "semaphore.tryAcquire"));
  }

  /**
   * Waits for a free slot. Waiters are woken by a NOTIFY when a holder releases, and poll every
   * 500 ms in case a holder died without one.
   */
  async acquire(options: SemaphoreAcquireOptions = {}): Promise<SemaphoreHandle> {
    optionsObject(options, "semaphore.acquire", ["timeout", "signal"]);
    const timeout = checkMs(options.timeout, "semaphore.acquire", "timeout");
    const signal = checkSignal(options.signal, "semaphore.acquire");
    const deadline =
      timeout === undefined
        ? undefined
        : timeoutSignal(timeout, () => new LockTimeoutError(`semaphore ${JSON.stringify(this.name)}`, timeout));
    const linked = linkSignals(signal, deadline?.signal);
    let wake: () => void = () => {};
    let woken = false;
    let unsubscribe: (() => void) | undefined;
    try {
      for (;;) {
        const handle = await this.#tryEverySlot(linked.signal);
        if (handle) return handle;
        if (!unsubscribe) {
          // Listen first, then try once more: a release between the two is not missed.
          unsubscribe = await this.#wakeups.subscribe(this.#topic, () => {
            woken = true;
            wake();
          });
          continue;
        }
        if (!woken) await waitForWake(linked.signal, (fn) => (wake = fn));
        woken = false;
      }
    } finally {
      unsubscribe?.();
      linked.dispose();
      deadline?.dispose();
    }
  }

  async #tryEverySlot(signal: AbortSignal | undefined): Promise<SemaphoreHandle | null> {
    // Start at a random slot, so that waiters spread over the slots instead of all trying slot 0 first.
    const start = Math.floor(Math.random() * this.permits);
    for (let i = 0; i < this.permits; i++) {
      const slot = (start + i) % this.permits;
      const handle = await this.#locker.tryAcquire(this.#slots[slot] as LockKey, signal ? { signal } : {});
      if (handle) return this.#wrap(handle, slot);
    }
    return null;
  }

  #wrap(handle: LockHandle, slot: number): SemaphoreHandle {
    const wakeups = this.#wakeups;
    let released: Promise<void> | undefined;
    const release = () => {
      released ??= handle.release().then(() => wakeups.notify(this.#topic).catch(() => {}));
      return released;
    };
    return {
      slot,
      key: handle.key,
      shared: false,
      fencingToken: undefined,
      get signal() {
        return handle.signal;
      },
      release,
      [Symbol.asyncDispose]: release,
    };
  }
}

function waitForWake(signal: AbortSignal, register: (wake: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve();
    };
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(done, FALLBACK_POLL_MS);
    signal.addEventListener("abort", onAbort, { once: true });
    register(done);
  });
}
