/**
 * An in-memory Locker for users' unit tests: the Locker's methods and semantics (exclusive, shared,
 * timeout, abort, loss, close) with no database. Lockers that share a `MemoryLockServer` contend
 * as processes sharing one PostgreSQL would. `simulateLoss()` plays a dead session.
 *
 * The same behavioural test cases run against this and the real Locker (test/contract.test.ts).
 */
import { EventEmitter } from "node:events";
import { ClosedError, LockLostError, LockTimeoutError } from "../errors.js";
import type { LockKey, LockKeyInput } from "../key.js";
import { lockKey } from "../key.js";
import { acquireAll, type LockGroup, parseAcquire, tryWithLock, withLock } from "../locker/compose.js";
import type { LockHandle } from "../locker/handle.js";
import type { AcquireOptions, LockerStats, TryAcquireOptions } from "../locker/locker.js";
import { LeaderElection } from "../patterns/leader.js";
import { Semaphore, type Wakeups } from "../patterns/semaphore.js";
import { linkSignals, timeoutSignal } from "../signals.js";
import type { LockMode } from "../sql.js";
import { registerHeld } from "../task.js";
import { checkBoolean, optionsObject } from "../validate.js";

interface Waiter {
  readonly locker: MemoryLocker;
  readonly mode: LockMode;
  grant(): void;
}

interface KeyState {
  mode: LockMode | undefined;
  readonly holders: Set<MemoryHandle>;
  readonly queue: Waiter[];
}

/** The shared "database" of memory Lockers: locks, fencing counters and wake-ups. */
export class MemoryLockServer {
  /** @internal */ readonly keys = new Map<string, KeyState>();
  /** @internal */ readonly tokens = new Map<string, bigint>();
  /** @internal */ readonly events: EventEmitter = new EventEmitter().setMaxListeners(0);

  /** @internal */
  state(key: LockKey): KeyState {
    let state = this.keys.get(key.identity);
    if (!state) {
      state = { mode: undefined, holders: new Set(), queue: [] };
      this.keys.set(key.identity, state);
    }
    return state;
  }

  /** @internal grants queued requests in order, as far as the modes allow. */
  drain(key: LockKey) {
    const state = this.state(key);
    while (state.queue.length > 0) {
      const head = state.queue[0] as Waiter;
      if (state.holders.size > 0 && !(head.mode === "shared" && state.mode === "shared")) break;
      state.queue.shift();
      head.grant();
    }
    if (state.holders.size === 0 && state.queue.length === 0) this.keys.delete(key.identity);
  }
}

export interface MemoryLockerOptions {
  /** Share one between Lockers that should contend with each other (default: a server of its own). */
  server?: MemoryLockServer;
  /** As the Locker's: a task re-taking a key it holds gets one more level (default false). */
  reentrant?: boolean;
}

export function createMemoryLocker(options: MemoryLockerOptions = {}): MemoryLocker {
  optionsObject(options, "createMemoryLocker", ["server", "reentrant"]);
  const reentrant = checkBoolean(options.reentrant, "createMemoryLocker", "reentrant") ?? false;
  return new MemoryLocker(options.server ?? new MemoryLockServer(), reentrant);
}

export class MemoryLocker {
  readonly server: MemoryLockServer;
  readonly #closing = new AbortController();
  readonly #held = new Set<MemoryHandle>();
  #waiting = 0;
  readonly #reentrant: boolean;

  constructor(server: MemoryLockServer, reentrant = false) {
    this.server = server;
    this.#reentrant = reentrant;
  }

  get #task() {
    return { owner: this, reentrant: this.#reentrant };
  }

  acquire(key: LockKeyInput, options: AcquireOptions = {}): Promise<LockHandle> {
    return (async () => {
      const args = parseAcquire("acquire", key, options, this.#closing.signal.aborted, this.#task);
      if (args.level) return args.level;
      const handle = this.#tryGrant(args.key, args.mode);
      if (handle) return this.#fence(handle, args.fencing);
      if (args.timeout === 0) throw new LockTimeoutError(args.key.toString(), 0);
      const timer =
        args.timeout === undefined
          ? undefined
          : timeoutSignal(args.timeout, () => new LockTimeoutError(args.key.toString(), args.timeout));
      const linked = linkSignals(args.signal, timer?.signal, this.#closing.signal);
      try {
        return this.#fence(await this.#wait(args.key, args.mode, linked.signal), args.fencing);
      } finally {
        linked.dispose();
        timer?.dispose();
      }
    })();
  }

  async tryAcquire(key: LockKeyInput, options: TryAcquireOptions = {}): Promise<LockHandle | null> {
    const args = parseAcquire("tryAcquire", key, options, this.#closing.signal.aborted, this.#task);
    if (args.level) return args.level;
    return this.#tryGrant(args.key, args.mode) ?? null;
  }

  async withLock<T>(key: LockKeyInput, fn: (signal: AbortSignal) => Promise<T> | T, options: AcquireOptions = {}) {
    return withLock(this, key, fn, options);
  }

  async tryWithLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: TryAcquireOptions = {},
  ): Promise<{ acquired: false } | { acquired: true; value: T }> {
    return tryWithLock(this, key, fn, options);
  }

  acquireAll(keys: readonly LockKeyInput[], options: AcquireOptions = {}): Promise<LockGroup> {
    return acquireAll(keys, options, (key, opts) => this.acquire(key, opts));
  }

  semaphore(name: string, permits: number): Semaphore {
    return new Semaphore(this, this.#wakeups, name, permits);
  }

  leaderElection(name: LockKeyInput): LeaderElection {
    return new LeaderElection(this, name);
  }

  stats(): LockerStats {
    return { sessions: 0, held: this.#held.size, waiting: this.#waiting };
  }

  /**
   * Plays the loss of the session that holds `key` (every key, without one): each handle of this
   * Locker on it has its signal aborted with a `LockLostError`, and the lock is free for others.
   * Resolves how many handles were lost.
   */
  simulateLoss(key?: LockKeyInput): number {
    const only = key === undefined ? undefined : lockKey(key).identity;
    let lost = 0;
    for (const handle of [...this.#held]) {
      if (only !== undefined && handle.key.identity !== only) continue;
      this.#drop(handle, new LockLostError(`lock ${handle.key} was lost (simulated)`));
      lost++;
    }
    return lost;
  }

  async close(): Promise<void> {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort(new ClosedError("the Locker"));
    for (const handle of [...this.#held])
      this.#drop(handle, new LockLostError("the Locker was closed while the lock was held"));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal */
  release(handle: MemoryHandle) {
    if (!this.#held.delete(handle)) return;
    const state = this.server.state(handle.key);
    state.holders.delete(handle);
    if (state.holders.size === 0) state.mode = undefined;
    this.server.drain(handle.key);
  }

  readonly #wakeups: Wakeups = {
    subscribe: async (topic, wake) => {
      this.server.events.on(topic, wake);
      return () => this.server.events.off(topic, wake);
    },
    notify: async (topic) => {
      this.server.events.emit(topic);
    },
  };

  #drop(handle: MemoryHandle, error: LockLostError) {
    this.release(handle);
    handle.lose(error);
  }

  #tryGrant(key: LockKey, mode: LockMode): MemoryHandle | undefined {
    const state = this.server.state(key);
    const free =
      state.queue.length === 0 && (state.holders.size === 0 || (mode === "shared" && state.mode === "shared"));
    return free ? this.#grant(key, mode) : undefined;
  }

  #grant(key: LockKey, mode: LockMode): MemoryHandle {
    const state = this.server.state(key);
    const handle = new MemoryHandle(this, key, mode === "shared");
    state.mode = mode;
    state.holders.add(handle);
    this.#held.add(handle);
    return handle;
  }

  #wait(key: LockKey, mode: LockMode, signal: AbortSignal): Promise<MemoryHandle> {
    return new Promise((resolve, reject) => {
      this.#waiting++;
      const state = this.server.state(key);
      const waiter: Waiter = {
        locker: this,
        mode,
        grant: () => {
          this.#waiting--;
          signal.removeEventListener("abort", onAbort);
          resolve(this.#grant(key, mode));
        },
      };
      const onAbort = () => {
        this.#waiting--;
        const index = state.queue.indexOf(waiter);
        if (index >= 0) state.queue.splice(index, 1);
        this.server.drain(key);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      state.queue.push(waiter);
    });
  }

  #fence(handle: MemoryHandle, fencing: boolean): MemoryHandle {
    if (!fencing) return handle;
    const token = (this.server.tokens.get(handle.key.identity) ?? 0n) + 1n;
    this.server.tokens.set(handle.key.identity, token);
    handle.fencingToken = token;
    return handle;
  }
}

class MemoryHandle implements LockHandle {
  readonly key: LockKey;
  readonly shared: boolean;
  fencingToken: bigint | undefined;
  readonly #locker: MemoryLocker;
  readonly #lost = new AbortController();
  #released = false;

  constructor(locker: MemoryLocker, key: LockKey, shared: boolean) {
    registerHeld(this, {
      owner: locker,
      key,
      shared,
      handle: this,
      isHeld: () => !this.#released,
      backendPid: () => undefined,
    });
    this.#locker = locker;
    this.key = key;
    this.shared = shared;
  }

  get signal(): AbortSignal {
    return this.#lost.signal;
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    this.#locker.release(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** @internal */
  lose(error: LockLostError) {
    this.#released = true;
    this.#lost.abort(error);
  }
}
