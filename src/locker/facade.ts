/**
 * The Locker façade, written once: every method a user calls on a Locker, with the argument checks,
 * the timeout, the signals, tracing, the events, the calls in flight that close() waits for, and the
 * handles it loses on close. What differs between advisory sessions, leases and the in-memory double
 * is a backend (contract/backend.ts) behind it.
 */
import type { LockBackend } from "../contract/backend.js";
import type { Handle } from "../contract/base-handle.js";
import {
  type AcquireArguments,
  acquireAll,
  checkFn,
  type LockGroup,
  parseAcquire,
  runHeld,
} from "../contract/compose.js";
import { publishAcquired, traceAcquire } from "../contract/events.js";
import type { LockHandle } from "../contract/handle.js";
import type {
  AcquireAllOptions,
  AcquireOptions,
  LockerStats,
  TaskOptions,
  TryAcquireOptions,
  TryResult,
} from "../contract/options.js";
import { ClosedError, LockLostError, LockTimeoutError } from "../errors.js";
import type { LockKeyInput } from "../key.js";
import { LeaderElection, type LeaderElectionOptions } from "../patterns/leader.js";
import { Semaphore } from "../patterns/semaphore.js";
import { PendingCalls } from "../pending.js";
import { linkSignals, sleep, timeoutSignal } from "../signals.js";

/**
 * Any Locker: the session Locker (`createLocker`), the lease Locker (`createLeaseLocker`) or the
 * in-memory Locker (`createMemoryLocker`). Write code and tests against this, and pass whichever
 * Locker the environment needs.
 *
 * @example
 * async function nightlyReport(locker: AnyLocker): Promise<void> {
 *   await locker.tryWithLock("nightly-report", async (signal) => {
 *     // runs on one replica at a time
 *   });
 * }
 */
export interface AnyLocker<H extends LockHandle = LockHandle> extends AsyncDisposable {
  /**
   * Waits until the lock is granted.
   * @throws LockTimeoutError after `timeout` ms.
   * @throws AlreadyHeldError when the calling task holds the key already (without `reentrant`).
   * @throws DeadlockError when the wait closes a cycle of tasks that wait for each other.
   * @throws ClosedError when the Locker is closed.
   */
  acquire(key: LockKeyInput, options?: AcquireOptions): Promise<H>;
  /** Takes the lock if it is free now; null otherwise. */
  tryAcquire(key: LockKeyInput, options?: TryAcquireOptions): Promise<H | null>;
  /**
   * Runs `fn` while holding the lock and releases it in every path. `fn` gets the handle's signal,
   * aborted if the lock is lost.
   * @throws LockLostError when the lock was lost before `fn` settled, even if `fn` resolved: the
   * critical section was not protected.
   */
  withLock<T>(key: LockKeyInput, fn: (signal: AbortSignal) => Promise<T> | T, options?: AcquireOptions): Promise<T>;
  /**
   * Runs `fn` only if the lock is free now (run-once jobs). Resolves `{ acquired: false }` without
   * running `fn`, or `{ acquired: true, value }`.
   * @throws LockLostError as {@link AnyLocker.withLock}.
   */
  tryWithLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options?: TryAcquireOptions,
  ): Promise<TryResult<T>>;
  /**
   * Takes every key or none, within one `timeout`, in one canonical order (int64 keys ascending,
   * then pairs), so two callers with overlapping sets cannot deadlock each other.
   * @throws InvalidArgumentError when a key appears twice.
   */
  acquireAll(keys: readonly LockKeyInput[], options?: AcquireAllOptions): Promise<LockGroup>;
  /**
   * A semaphore of `permits` slots named `name`, shared by every Locker of the same kind that uses the name.
   * @example
   * const uploads = locker.semaphore("uploads", 3);
   * await using slot = await uploads.acquire({ timeout: 10_000 });
   */
  semaphore(name: string, permits: number): Semaphore;
  /**
   * A leader election on `name`: the holder of the lock leads; `leader()` and `observe()` tell any
   * process who leads, and the duties get the term's fencing token.
   * @example
   * const election = locker.leaderElection("billing-scheduler");
   * election.on("elected", () => console.log("leading"));
   * await election.run(async (signal) => { while (!signal.aborted) await tick(signal); }, { signal: shutdown });
   */
  leaderElection(name: LockKeyInput, options?: LeaderElectionOptions): LeaderElection;
  /** What the Locker holds and waits for now. */
  stats(): LockerStats;
  /** Rejects pending acquires with `ClosedError`, releases every lock, gives everything back. Idempotent. */
  close(): Promise<void>;
}

/** The one implementation of {@link AnyLocker}; each Locker class gives it a backend. */
export abstract class LockerFacade<H extends LockHandle> implements AnyLocker<H> {
  readonly #backend: LockBackend<Handle>;
  readonly #closing: AbortController;
  readonly #reentrant: boolean;
  readonly #pending = new PendingCalls();
  readonly #held = new Set<Handle>();
  #closed: Promise<void> | undefined;

  /** @internal */
  constructor(backend: LockBackend<Handle>, closing: AbortController, reentrant: boolean) {
    this.#backend = backend;
    this.#closing = closing;
    this.#reentrant = reentrant;
  }

  acquire(key: LockKeyInput, options: AcquireOptions = {}): Promise<H> {
    return this.#pending.track(this.#acquire(key, options));
  }

  tryAcquire(key: LockKeyInput, options: TryAcquireOptions = {}): Promise<H | null> {
    return this.#pending.track(this.#tryAcquire(key, options));
  }

  async withLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: AcquireOptions = {},
  ): Promise<T> {
    checkFn(fn, "withLock");
    return runHeld(await this.acquire(key, options), fn);
  }

  async tryWithLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: TryAcquireOptions = {},
  ): Promise<TryResult<T>> {
    checkFn(fn, "tryWithLock");
    const handle = await this.tryAcquire(key, options);
    if (!handle) return { acquired: false };
    return { acquired: true, value: await runHeld(handle, fn) };
  }

  acquireAll(keys: readonly LockKeyInput[], options: AcquireAllOptions = {}): Promise<LockGroup> {
    return acquireAll(keys, options, (key, opts) => this.acquire(key, opts));
  }

  semaphore(name: string, permits: number): Semaphore {
    return Semaphore.create(this, this.#backend, name, permits);
  }

  leaderElection(name: LockKeyInput, options?: LeaderElectionOptions): LeaderElection {
    return LeaderElection.create(this, this.#backend.leaders, this.#backend.wakeups, name, options);
  }

  stats(): LockerStats {
    const { sessions, waiting } = this.#backend.stats();
    return { sessions, held: this.#held.size, waiting };
  }

  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  /** `await using locker = createLocker(…)` closes it when the block ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal the handles held now (the memory Locker's simulateLoss). */
  protected heldHandles(): Handle[] {
    return [...this.#held];
  }

  async #acquire(key: LockKeyInput, options: AcquireOptions): Promise<H> {
    const args = parseAcquire("acquire", key, options, this.#closing.signal.aborted, this.#task);
    if (args.level) return args.level as H;
    const handle = await traceAcquire(
      () => ({ key: args.key, shared: args.mode === "shared", wait: true }),
      async () => {
        const timeout = args.timeout;
        // timeout 0 means: only if it is free now, exactly as tryAcquire. A 0 ms timer would fire
        // before the first round trip came back, and refuse a free key (issue #26).
        const timer =
          timeout === undefined || timeout === 0
            ? undefined
            : timeoutSignal(timeout, () => new LockTimeoutError(args.key.toString(), timeout));
        const linked = linkSignals(args.signal, timer?.signal, this.#closing.signal);
        try {
          const startedAt = performance.now();
          const granted = await this.#take(args, timeout !== 0, linked.signal);
          if (granted === undefined) throw new LockTimeoutError(args.key.toString(), 0);
          if (args.fencing) await this.#backend.fence(granted);
          return this.#handOut(granted, startedAt, args.atMostMs);
        } finally {
          linked.dispose();
          timer?.dispose();
        }
      },
    );
    return handle as unknown as H;
  }

  async #tryAcquire(key: LockKeyInput, options: TryAcquireOptions): Promise<H | null> {
    const args = parseAcquire("tryAcquire", key, options, this.#closing.signal.aborted, this.#task);
    if (args.level) return args.level as H;
    const handle = await traceAcquire(
      () => ({ key: args.key, shared: args.mode === "shared", wait: false }),
      async () => {
        const linked = linkSignals(args.signal, this.#closing.signal);
        try {
          const startedAt = performance.now();
          const granted = await this.#take(args, false, linked.signal);
          return granted && this.#handOut(granted, startedAt, args.atMostMs);
        } finally {
          linked.dispose();
        }
      },
    );
    return (handle ?? null) as H | null;
  }

  get #task(): { owner: object; reentrant: boolean } & TaskOptions {
    return { owner: this.#backend, reentrant: this.#reentrant };
  }

  /**
   * The backend's grant; with `atLeastMs`, only once no earlier run keeps the key taken (a run's
   * record outlives its holder: issue #25). A key kept by an earlier run is released and, while
   * `wait`, asked for again when that run's time is up.
   */
  async #take(args: AcquireArguments, wait: boolean, signal: AbortSignal): Promise<Handle | undefined> {
    for (;;) {
      const granted = await this.#backend.request(args, wait, signal);
      if (granted === undefined || args.atLeastMs === 0) return granted;
      let keptFor: number | undefined;
      try {
        keptFor = await this.#backend.reserve(granted, args.atLeastMs);
      } catch (error) {
        await granted.release().catch(() => {});
        throw error;
      }
      if (keptFor === undefined) return granted;
      await granted.release();
      if (!wait) return undefined;
      // Replicas that wait for the same run's end do not all come back at once.
      await sleep(keptFor + Math.random() * 50, signal);
    }
  }

  #handOut(handle: Handle, startedAt: number, atMostMs: number): Handle {
    if (!handle.held) return handle;
    if (atMostMs > 0) handle.expireAfter(atMostMs);
    handle.heldIn(this.#held);
    publishAcquired(() => ({ handle, key: handle.key, shared: handle.shared, waitMs: performance.now() - startedAt }));
    return handle;
  }

  async #close() {
    this.#closing.abort(new ClosedError("the Locker"));
    await this.#pending.settled();
    const lost = new LockLostError("the Locker was closed while the lock was held");
    for (const handle of [...this.#held]) handle.lose(lost);
    await this.#backend.close();
  }
}
