/**
 * An in-memory Locker for users' unit tests: the same façade as the real Lockers (locker/facade.ts)
 * over a backend that keeps locks in memory, so its semantics (exclusive, shared, timeout, abort,
 * loss, close, tasks, events) cannot drift from theirs. Lockers that share a `MemoryLockServer`
 * contend as processes sharing one PostgreSQL would. `simulateLoss()` plays a dead session.
 *
 * The same behavioural test cases run against this and the real Lockers (test/contract.test.ts).
 */
import { EventEmitter } from "node:events";
import type { Leaderboard, Leadership, LockBackend, LockRequest, Wakeups } from "../contract/backend.js";
import { Handle } from "../contract/base-handle.js";
import type { LockHandle } from "../contract/handle.js";
import { LockLostError } from "../errors.js";
import { type LockKey, type LockKeyInput, type LockMode, lockKey } from "../key.js";
import { LockerFacade } from "../locker/facade.js";
import { sharedController } from "../signals.js";
import { checkBoolean, optionsObject } from "../validate.js";

interface Waiter {
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
  /** @internal until when (performance.now()) a run with atLeastMs keeps each key. */
  readonly runs = new Map<string, number>();
  /** @internal */ readonly events: EventEmitter = new EventEmitter().setMaxListeners(0);
  /** @internal the elections' records: the leader's handle, and until when (performance.now()) its term lasts. */
  readonly leaders = new Map<string, { leadership: Leadership; handle: LockHandle; until: number }>();

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

/** Options of `createMemoryLocker`. */
export interface MemoryLockerOptions {
  /**
   * Share one between Lockers that should contend with each other.
   * @defaultValue a server of its own
   */
  server?: MemoryLockServer;
  /**
   * As the Locker's: a task re-taking a key it holds gets one more level.
   * @defaultValue false
   */
  reentrant?: boolean;
}

/**
 * Creates an in-memory Locker, for unit tests of code written against {@link AnyLocker}.
 *
 * @example
 * const server = new MemoryLockServer();
 * const a = createMemoryLocker({ server });
 * const b = createMemoryLocker({ server });
 * await using held = await a.acquire("job");
 * console.log(await b.tryAcquire("job")); // null: a holds it
 */
export function createMemoryLocker(options: MemoryLockerOptions = {}): MemoryLocker {
  optionsObject(options, "createMemoryLocker", ["server", "reentrant"]);
  const reentrant = checkBoolean(options.reentrant, "createMemoryLocker", "reentrant") ?? false;
  return MemoryLocker.create(options.server ?? new MemoryLockServer(), reentrant);
}

/** The in-memory Locker: see {@link AnyLocker} for its methods. */
export class MemoryLocker extends LockerFacade<LockHandle> {
  /** The server it shares with the Lockers it contends with. */
  readonly server: MemoryLockServer;

  /** @internal */
  static create(server: MemoryLockServer, reentrant: boolean): MemoryLocker {
    return new MemoryLocker(server, reentrant);
  }

  /** Use {@link createMemoryLocker}. */
  private constructor(server: MemoryLockServer, reentrant: boolean) {
    super(new MemoryBackend(server), sharedController(), reentrant);
    this.server = server;
  }

  /**
   * Plays the loss of the session that holds `key` (every key, without one): each handle of this
   * Locker on it has its signal aborted with a `LockLostError`, and the lock is free for others.
   * Returns how many handles were lost.
   */
  simulateLoss(key?: LockKeyInput): number {
    const only = key === undefined ? undefined : lockKey(key).identity;
    let lost = 0;
    for (const handle of this.heldHandles()) {
      if (only !== undefined && handle.key.identity !== only) continue;
      handle.lose(new LockLostError(`lock ${handle.key} was lost (simulated)`));
      lost++;
    }
    return lost;
  }
}

class MemoryBackend implements LockBackend<MemoryHandle> {
  readonly #server: MemoryLockServer;
  #waiting = 0;

  constructor(server: MemoryLockServer) {
    this.#server = server;
  }

  async request({ key, mode }: LockRequest, wait: boolean, signal: AbortSignal): Promise<MemoryHandle | undefined> {
    const state = this.#server.state(key);
    const free =
      state.queue.length === 0 && (state.holders.size === 0 || (mode === "shared" && state.mode === "shared"));
    if (free) return this.#grant(key, mode);
    if (!wait) return undefined;
    return this.#wait(key, mode, signal);
  }

  async fence(handle: MemoryHandle): Promise<void> {
    const token = (this.#server.tokens.get(handle.key.identity) ?? 0n) + 1n;
    this.#server.tokens.set(handle.key.identity, token);
    handle.fencingToken = token;
  }

  async reserve(handle: MemoryHandle, atLeastMs: number): Promise<number | undefined> {
    const now = performance.now();
    const kept = (this.#server.runs.get(handle.key.identity) ?? 0) - now;
    if (kept > 0) return kept;
    this.#server.runs.set(handle.key.identity, now + atLeastMs);
    return undefined;
  }

  readonly wakeups: Wakeups = {
    subscribe: async (topic, wake) => {
      this.#server.events.on(topic, wake);
      return () => this.#server.events.off(topic, wake);
    },
    notify: async (topic) => {
      this.#server.events.emit(topic);
    },
  };

  readonly leaders: Leaderboard = {
    waitsOnServer: true,
    proclaim: async (handle, record, term, termMs) => {
      const current = this.#server.leaders.get(handle.key.identity);
      if (current && current.leadership.term > term) return false;
      const leadership = { owner: record.owner, payload: record.payload ?? null, term, since: new Date() };
      this.#server.leaders.set(handle.key.identity, { leadership, handle, until: performance.now() + termMs });
      return true;
    },
    renew: async (key, term, termMs) => {
      const current = this.#server.leaders.get(key.identity);
      if (!current || current.leadership.term !== term || current.until <= performance.now()) return false;
      current.until = performance.now() + termMs;
      return true;
    },
    resign: async (key, term) => {
      if (this.#server.leaders.get(key.identity)?.leadership.term === term) this.#server.leaders.delete(key.identity);
    },
    read: async (key) => {
      const current = this.#server.leaders.get(key.identity);
      const alive = current && current.until > performance.now() && !current.handle.signal.aborted;
      return alive && this.#server.keys.get(key.identity)?.holders.has(current.handle as MemoryHandle)
        ? current.leadership
        : null;
    },
    // A memory Locker's leader cannot freeze without freezing the test that runs it.
    depose: async () => false,
  };

  async holdersOf(keys: readonly LockKey[]): Promise<{ key: LockKey; holder: string }[]> {
    return keys.flatMap((key) =>
      [...(this.#server.keys.get(key.identity)?.holders ?? [])].map(() => ({ key, holder: "memory" })),
    );
  }

  stats(): { sessions: number; waiting: number } {
    return { sessions: 0, waiting: this.#waiting };
  }

  async close(): Promise<void> {}

  /** Frees a released or lost handle's hold on its key, and grants the next waiters. */
  free(handle: MemoryHandle) {
    const state = this.#server.state(handle.key);
    if (!state.holders.delete(handle)) return;
    if (state.holders.size === 0) state.mode = undefined;
    this.#server.drain(handle.key);
  }

  #grant(key: LockKey, mode: LockMode): MemoryHandle {
    const state = this.#server.state(key);
    const handle = new MemoryHandle(this, key, mode === "shared");
    state.mode = mode;
    state.holders.add(handle);
    return handle;
  }

  #wait(key: LockKey, mode: LockMode, signal: AbortSignal): Promise<MemoryHandle> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      this.#waiting++;
      const state = this.#server.state(key);
      const waiter: Waiter = {
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
        this.#server.drain(key);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      state.queue.push(waiter);
    });
  }
}

class MemoryHandle extends Handle {
  readonly #backend: MemoryBackend;

  constructor(backend: MemoryBackend, key: LockKey, shared: boolean) {
    super(backend, key, shared);
    this.#backend = backend;
  }

  protected override async freeOnServer(): Promise<void> {
    this.#backend.free(this);
  }

  protected override onLost(): void {
    this.#backend.free(this);
  }
}
