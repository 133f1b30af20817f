/**
 * A counting semaphore across processes: `permits` slots, each a lock. Slot i of the semaphore named
 * N is the key `hashKey("pglock:semaphore:" + N + ":" + i)`, i from 0 to permits - 1; this
 * derivation is stable, so processes in any language can share a semaphore.
 *
 * Fair waits (issue #28): waiters take the semaphore's queue key (`pglock:semaphore:N:queue`) in turn,
 * and only the one whose turn it is takes slots, keeping those it got until it has as many as it asked
 * for; so a waiter for 3 permits is not overtaken forever by waiters for 1. On the session Locker the
 * server grants the queue key in the order the waits began (within a wait slice: a wait longer than
 * deadlock_timeout + 0.5–1.5 s goes back into the queue); leases take turns by polling. A release
 * wakes the waiter whose turn it is (NOTIFY, or in process for leases); a holder that died sends
 * nothing, so waiters also look every 500 ms. `tryAcquire` takes free slots whether or not someone
 * waits, as a fair java.util.concurrent.Semaphore's tryAcquire does.
 */

import type { Wakeups } from "../contract/backend.js";
import type { LockHandle } from "../contract/handle.js";
import { InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKey, lockKey } from "../key.js";
import { linkSignals, timeoutSignal, Wake } from "../signals.js";
import { checkInteger, checkMs, checkSignal, optionsObject } from "../validate.js";

/** What a semaphore needs from a Locker: a wait for its queue key, and try-locks on its slot keys. */
export interface SlotLocker {
  acquire(key: LockKey, options?: { signal?: AbortSignal }): Promise<LockHandle>;
  tryAcquire(key: LockKey, options?: { signal?: AbortSignal }): Promise<LockHandle | null>;
}

/** What a semaphore needs from a Locker's backend: wake-ups, and who holds its slots. */
export interface SlotServer {
  readonly wakeups: Wakeups;
  holdersOf(keys: readonly LockKey[]): Promise<{ key: LockKey; holder: string }[]>;
}

/** Held permits of a semaphore: released together. */
export interface SemaphoreHandle extends LockHandle {
  /** The first of the slots held, from 0 to permits - 1. */
  readonly slot: number;
  /** Every slot held: as many as the permits asked for. */
  readonly slots: readonly number[];
}

/** Options of a semaphore's `acquire`. */
export interface SemaphoreAcquireOptions {
  /**
   * How many permits to take at once, from 1 to the semaphore's permits.
   * @defaultValue 1
   */
  permits?: number;
  /** Give up after this many ms with `LockTimeoutError`; nothing stays held. */
  timeout?: number;
  /** Aborting it gives up with `signal.reason`; nothing stays held. */
  signal?: AbortSignal;
}

/** Options of a semaphore's `tryAcquire`. */
export interface SemaphoreTryAcquireOptions {
  /**
   * How many permits to take at once, from 1 to the semaphore's permits.
   * @defaultValue 1
   */
  permits?: number;
  /** Aborting it gives up with `signal.reason`. */
  signal?: AbortSignal;
}

/** Who holds a slot of a semaphore. */
export interface SemaphoreHolder {
  /** The slot, from 0 to permits - 1. */
  readonly slot: number;
  /** The holder: `host:pid@nonce locker-n` for a pglock session, a lease's holder id, or `pid N`. */
  readonly holder: string;
}

/** Waiters look this often even without a wake-up: a holder that dies sends no NOTIFY. */
const FALLBACK_POLL_MS = 500;

/**
 * A counting semaphore across processes: at most `permits` permits held at once. Make one with a
 * Locker's `semaphore(name, permits)`; every Locker of the same kind that uses the name shares it.
 */
export class Semaphore {
  /** The name every process uses for this semaphore. */
  readonly name: string;
  /** How many permits there are. */
  readonly permits: number;
  readonly #locker: SlotLocker;
  readonly #server: SlotServer;
  readonly #slots: LockKey[];
  readonly #queue: LockKey;
  readonly #topic: string;

  /** @internal a Locker's `semaphore(name, permits)` */
  static create(locker: SlotLocker, server: SlotServer, name: string, permits: number): Semaphore {
    return new Semaphore(locker, server, name, permits);
  }

  /** Use a Locker's `semaphore(name, permits)`. */
  private constructor(locker: SlotLocker, server: SlotServer, name: string, permits: number) {
    if (typeof name !== "string" || name.length === 0) {
      throw new InvalidArgumentError(`semaphore: name must be a non-empty string, got ${describe(name)}`);
    }
    checkInteger(permits, "semaphore", "permits", 1);
    this.#locker = locker;
    this.#server = server;
    this.name = name;
    this.permits = permits;
    this.#slots = Array.from({ length: permits }, (_, slot) => Semaphore.slotKey(name, slot));
    this.#queue = lockKey(`pglock:semaphore:${name}:queue`);
    this.#topic = `semaphore:${String(lockKey(name).id)}`;
  }

  /** The lock key of slot `slot` of the semaphore `name`. */
  static slotKey(name: string, slot: number): LockKey {
    return lockKey(`pglock:semaphore:${name}:${slot}`);
  }

  /** `permits` free permits now (default 1), or null; takes them whether or not others wait. */
  async tryAcquire(options: SemaphoreTryAcquireOptions = {}): Promise<SemaphoreHandle | null> {
    optionsObject(options, "semaphore.tryAcquire", ["permits", "signal"]);
    const wanted = this.#wanted(options.permits, "semaphore.tryAcquire");
    const signal = checkSignal(options.signal, "semaphore.tryAcquire");
    const held: Held[] = [];
    try {
      await this.#takeFree(wanted, held, signal);
    } catch (error) {
      await releaseAll(held);
      throw error;
    }
    if (held.length === wanted) return this.#wrap(held);
    await releaseAll(held);
    return null;
  }

  /**
   * Waits for `permits` permits (default 1), in turn with the other waiters: see the module comment.
   * @example
   * const uploads = locker.semaphore("uploads", 3);
   * await using permits = await uploads.acquire({ permits: 2, timeout: 10_000 });
   */
  async acquire(options: SemaphoreAcquireOptions = {}): Promise<SemaphoreHandle> {
    optionsObject(options, "semaphore.acquire", ["permits", "timeout", "signal"]);
    const wanted = this.#wanted(options.permits, "semaphore.acquire");
    const timeout = checkMs(options.timeout, "semaphore.acquire", "timeout");
    const signal = checkSignal(options.signal, "semaphore.acquire");
    const deadline =
      timeout === undefined
        ? undefined
        : timeoutSignal(timeout, () => new LockTimeoutError(`semaphore ${JSON.stringify(this.name)}`, timeout));
    const linked = linkSignals(signal, deadline?.signal);
    const held: Held[] = [];
    let turn: LockHandle | undefined;
    let unsubscribe: (() => void) | undefined;
    try {
      // A free queue key is taken with a try-lock (one round trip); a busy one is waited for in turn.
      turn =
        (await this.#locker.tryAcquire(this.#queue, { signal: linked.signal })) ??
        (await this.#locker.acquire(this.#queue, { signal: linked.signal }));
      const wake = new Wake();
      for (;;) {
        await this.#takeFree(wanted - held.length, held, linked.signal);
        if (held.length === wanted) return this.#wrap(held);
        if (!unsubscribe) {
          // Listen (a LISTEN session is opened only now: most acquires never wait), then look once
          // more: a release between the look and the LISTEN is not missed.
          unsubscribe = await this.#server.wakeups.subscribe(this.#topic, () => wake.wake());
          continue;
        }
        await wake.wait(FALLBACK_POLL_MS, linked.signal);
        linked.signal.throwIfAborted();
      }
    } catch (error) {
      await releaseAll(held);
      throw error;
    } finally {
      unsubscribe?.();
      await turn?.release().catch(() => {});
      linked.dispose();
      deadline?.dispose();
    }
  }

  /** How many permits are free now, across every process (a snapshot: it may change at once). */
  async available(): Promise<number> {
    return this.permits - new Set((await this.holders()).map((held) => held.slot)).size;
  }

  /** Who holds which slot now, across every process. */
  async holders(): Promise<SemaphoreHolder[]> {
    const slotOf = new Map(this.#slots.map((key, slot) => [key.identity, slot]));
    const rows = await this.#server.holdersOf(this.#slots);
    return rows
      .map((row) => ({ slot: slotOf.get(row.key.identity) as number, holder: row.holder }))
      .sort((a, b) => a.slot - b.slot);
  }

  #wanted(permits: unknown, where: string): number {
    return checkInteger(permits, where, "options.permits", 1, this.permits) ?? 1;
  }

  /** Tries the slots not held yet, from a random one (waiters spread over them), until `count` more are held. */
  async #takeFree(count: number, held: Held[], signal: AbortSignal | undefined): Promise<void> {
    const mine = new Set(held.map((h) => h.slot));
    const start = Math.floor(Math.random() * this.permits);
    let taken = 0;
    for (let i = 0; i < this.permits && taken < count; i++) {
      const slot = (start + i) % this.permits;
      if (mine.has(slot)) continue;
      const handle = await this.#locker.tryAcquire(this.#slots[slot] as LockKey, signal ? { signal } : {});
      if (handle) {
        held.push({ slot, handle });
        taken++;
      }
    }
  }

  #wrap(held: Held[]): SemaphoreHandle {
    const wakeups = this.#server.wakeups;
    const sorted = [...held].sort((a, b) => a.slot - b.slot);
    const first = sorted[0] as Held;
    let released: Promise<void> | undefined;
    const release = () => {
      released ??= releaseAll(sorted).then(() => wakeups.notify(this.#topic).catch(() => {}));
      return released;
    };
    const signal = sorted.length === 1 ? first.handle.signal : AbortSignal.any(sorted.map((h) => h.handle.signal));
    return {
      slot: first.slot,
      slots: sorted.map((h) => h.slot),
      key: first.handle.key,
      shared: false,
      fencingToken: undefined,
      signal,
      release,
      [Symbol.asyncDispose]: release,
    };
  }
}

interface Held {
  readonly slot: number;
  readonly handle: LockHandle;
}

async function releaseAll(held: readonly Held[]): Promise<void> {
  await Promise.all(held.map((h) => h.handle.release().catch(() => {})));
}
