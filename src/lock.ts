/**
 * Lock: go-pglock's API over one dedicated PostgreSQL session, done so that a lock the library says
 * is held is held, and one it says is released is released.
 */
import { releaseLevel, releaseLevels, tryLock, waitForLock } from "./acquire.js";
import type { LockDatabase } from "./database.js";
import { DEFAULT_DEADLOCK_TIMEOUT_MS, DeadlockWatch } from "./deadlock.js";
import { ClosedError, ConnectionError, InvalidArgumentError, LockNotHeldError, sessionEndedError } from "./errors.js";
import { applicationNameOf, newOwner } from "./identity.js";
import type { LockMode } from "./key.js";
import { describe, type LockKey, type LockKeyInput, lockKey } from "./key.js";
import { LIVENESS_OPTIONS, type LivenessOptions, liveness } from "./liveness.js";
import { readLocksOn } from "./locks.js";
import type { Driver } from "./session/driver.js";
import { driverFor } from "./session/drivers.js";
import { Session } from "./session/session.js";
import { linkSignals, sharedController, untilAborted } from "./signals.js";
import { checkMs, checkSignal, checkString, optionsObject } from "./validate.js";

/** Options every Lock method takes. */
export interface CallOptions {
  /** Aborting it cancels the call (and the server-side wait); the call rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
}

/** Options of waitAndLock and waitAndRLock. */
export interface WaitOptions extends CallOptions {
  /**
   * Other Locks this caller holds while it waits, for the deadlock check (as go-pglock, pglock looks
   * for no deadlock between seed Locks unless told): `await b.waitAndLock({ holding: [a] })`. A
   * cycle of such waits, across processes and with Lockers' nested calls, fails one of them with
   * `DeadlockError`. A Lock on a caller's own pg.Client cannot look.
   */
  holding?: readonly Lock[] | undefined;
}

/** Options of `newLock`: with `keepaliveMs`, `probeTimeoutMs` and `serverKeepaliveMs`, as a Locker's. */
export interface NewLockOptions extends CallOptions, LivenessOptions {
  /**
   * How long a wait (waitAndLock, waitAndRLock) with `holding` lasts before the Lock looks for a
   * deadlock, and how often it looks again (default 1000; 0: never look). One look serves every such
   * wait on the same pool; it opens a session (a pool checkout) for its statement.
   */
  deadlockTimeoutMs?: number | undefined;
  /**
   * The name that begins the session's application_name while it is pglock's (default `pglock`);
   * pglock adds `<host>:<process id> lock-<n>`. Not set on a caller's pg.Client.
   */
  applicationName?: string | undefined;
}

/**
 * Creates a Lock on `key` with a dedicated session: a connection checked out of a `pg.Pool` (given
 * back by `close()`), or a connected `pg.Client` the caller owns (left open by `close()`).
 *
 * @example
 * await using lock = await newLock(pool, "cleanup-task");
 * if (await lock.lock()) {
 *   try { await cleanUp(); } finally { await lock.unlock(); }
 * }
 */
export async function newLock(db: LockDatabase, key: LockKeyInput, options: NewLockOptions = {}): Promise<Lock> {
  optionsObject(options, "newLock", ["signal", "applicationName", "deadlockTimeoutMs", ...LIVENESS_OPTIONS]);
  const normalized = lockKey(key);
  const signal = checkSignal(options.signal, "newLock");
  const name = checkString(options.applicationName, "newLock", "applicationName") ?? "pglock";
  const { keepaliveMs, probeTimeoutMs, serverSettings } = liveness(options, "newLock");
  const deadlockTimeoutMs =
    checkMs(options.deadlockTimeoutMs, "newLock", "deadlockTimeoutMs") ?? DEFAULT_DEADLOCK_TIMEOUT_MS;
  const driver = driverFor(db, "newLock", { allowClient: true });
  const deadlock = deadlockWatchOf(db as object, driver, driver.ownsConnections ? deadlockTimeoutMs : 0);
  const applicationName = applicationNameOf(newOwner("lock", name));
  const opening = Session.open(driver, { applicationName, keepaliveMs, probeTimeoutMs, serverSettings });
  if (!signal) return new Lock(await opening, normalized, deadlock);
  // A pool checkout cannot be cancelled: when the caller gives up first, the session goes straight back.
  const session = await untilAborted(opening, signal, (late) => late.release());
  return new Lock(session, normalized, deadlock);
}

/**
 * One deadlock watch per pool and delay: one look serves every watched wait of this process's Locks
 * on it. The Lock's own session is busy waiting: a look opens another session, only while a watched
 * wait lasts.
 */
const watches = new WeakMap<object, Map<number, DeadlockWatch>>();
function deadlockWatchOf(db: object, driver: Driver, delayMs: number): DeadlockWatch {
  const byDelay = watches.get(db) ?? new Map<number, DeadlockWatch>();
  watches.set(db, byDelay);
  let watch = byDelay.get(delayMs);
  if (!watch) {
    const server: { version?: number } = {};
    watch = new DeadlockWatch(delayMs, () => readLocksOn(driver, undefined, server));
    byDelay.set(delayMs, watch);
  }
  return watch;
}

/** One lock key over one dedicated session. Locks stack as in PostgreSQL: n locks need n unlocks. */
export class Lock {
  /** The key this Lock takes. */
  readonly key: LockKey;
  readonly #session: Session;
  readonly #closing = sharedController();
  readonly #levels: Record<LockMode, number> = { exclusive: 0, shared: 0 };
  readonly #releasing: Record<LockMode, number> = { exclusive: 0, shared: 0 };
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #lost = new AbortController();
  readonly #deadlock: DeadlockWatch;
  #closed: Promise<void> | undefined;

  /** @internal use {@link newLock} */
  constructor(session: Session, key: LockKey, deadlock: DeadlockWatch) {
    this.#session = session;
    this.key = key;
    this.#deadlock = deadlock;
    // The session can end under a Lock that nobody calls: told by the liveness probe, not 15 minutes
    // later by the next call's TCP timeout (issue #14).
    session.lostSignal.addEventListener(
      "abort",
      () => this.#lost.abort(sessionEndedError(key, session.lostSignal.reason)),
      { once: true },
    );
  }

  /**
   * Aborted with a `LockLostError` when the Lock's session ends (terminated, a restart, a network cut
   * found by the liveness probe): every level it held is gone. Not aborted by `close()`.
   */
  get signal(): AbortSignal {
    return this.#lost.signal;
  }

  /** Takes the lock exclusively if it is free now; resolves whether it did (pg_try_advisory_lock). */
  lock(options?: CallOptions): Promise<boolean> {
    return this.#call("lock", options, (signal) => this.#try("exclusive", signal));
  }

  /** Takes the lock shared if no one holds it exclusively now (pg_try_advisory_lock_shared). */
  rLock(options?: CallOptions): Promise<boolean> {
    return this.#call("rLock", options, (signal) => this.#try("shared", signal));
  }

  /** Waits until the lock is granted exclusively (pg_advisory_lock: the server hands it over, no polling). */
  waitAndLock(options?: WaitOptions): Promise<void> {
    return this.#call("waitAndLock", options, (signal) => this.#wait("exclusive", signal, "waitAndLock", options));
  }

  /** Waits until the lock is granted shared (pg_advisory_lock_shared). */
  waitAndRLock(options?: WaitOptions): Promise<void> {
    return this.#call("waitAndRLock", options, (signal) => this.#wait("shared", signal, "waitAndRLock", options));
  }

  /** Releases one exclusive level; false (and no error) when this Lock holds none. */
  unlock(options?: CallOptions): Promise<boolean> {
    return this.#call("unlock", options, (signal) => this.#release("exclusive", signal));
  }

  /** Releases one shared level; false (and no error) when this Lock holds none. */
  rUnlock(options?: CallOptions): Promise<boolean> {
    return this.#call("rUnlock", options, (signal) => this.#release("shared", signal));
  }

  /**
   * Cancels pending calls, releases every level this Lock holds and gives the connection back.
   * When it resolves, another session can take the key. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  /** `await using lock = await newLock(…)` closes it when the block ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close() {
    this.#closing.abort(new ClosedError("the Lock"));
    await Promise.allSettled(this.#inFlight);
    const session = this.#session;
    try {
      if (!session.isLost) {
        await releaseLevels(session, this.key, "exclusive", this.#levels.exclusive);
        await releaseLevels(session, this.key, "shared", this.#levels.shared);
      }
    } catch (error) {
      // Ending the session is the other certain way to release; the error is then no concern of the caller.
      await session.discard(new ConnectionError(`could not release lock ${this.key} on close`, { cause: error }));
    } finally {
      this.#levels.exclusive = 0;
      this.#levels.shared = 0;
      await session.release();
    }
  }

  #call<T>(name: string, options: CallOptions | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      optionsObject(options, `Lock.${name}`, name.startsWith("wait") ? ["signal", "holding"] : ["signal"]);
      const signal = checkSignal(options?.signal, `Lock.${name}`);
      if (this.#closing.signal.aborted) throw new ClosedError("the Lock");
      if (signal?.aborted) throw signal.reason;
      if (this.#session.isLost) throw this.#session.lostSignal.reason;
      const linked = linkSignals(signal, this.#closing.signal);
      const promise = run(linked.signal).finally(() => {
        linked.dispose();
        this.#inFlight.delete(promise);
      });
      this.#inFlight.add(promise);
      return promise;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async #try(mode: LockMode, signal: AbortSignal) {
    const granted = await tryLock(this.#session, this.key, mode, signal);
    if (granted) this.#levels[mode]++;
    return granted;
  }

  /** The `holding` option, checked before anything reaches the server. */
  #holding(name: string, options: WaitOptions | undefined): readonly Lock[] {
    const holding = options !== null && typeof options === "object" ? options.holding : undefined;
    if (holding === undefined) return [];
    if (!Array.isArray(holding) || holding.some((lock) => !(lock instanceof Lock))) {
      throw new InvalidArgumentError(
        `Lock.${name}: options.holding must be an array of the Locks this caller holds, got ${describe(holding)}`,
      );
    }
    return holding;
  }

  /** What this Lock holds on the server now: its session and key, while it holds a level. */
  #heldOnServer(): { pid: number; key: LockKey } | undefined {
    const held = this.#levels.exclusive + this.#levels.shared > 0 && !this.#session.isLost;
    return held ? { pid: this.#session.backendPid, key: this.key } : undefined;
  }

  async #wait(mode: LockMode, signal: AbortSignal, name: string, options: WaitOptions | undefined) {
    const holding = this.#holding(name, options);
    const holdsMode = () => this.#levels[mode] > 0;
    const session = this.#session;
    const wait = { pid: session.backendPid, key: this.key, cancel: () => session.cancelWait() };
    const holds = () => holding.flatMap((lock) => lock.#heldOnServer() ?? []);
    await this.#deadlock.run(wait, holds().length > 0, (interrupted) =>
      waitForLock(session, this.key, mode, { signal, holdsMode, interrupted, holds }),
    );
    this.#levels[mode]++;
  }

  async #release(mode: LockMode, signal: AbortSignal) {
    // #levels counts what the server has confirmed; releases still queued are counted apart, so
    // that two concurrent unlocks of one level cannot both send a release.
    if (this.#levels[mode] - this.#releasing[mode] === 0) return false;
    this.#releasing[mode]++;
    try {
      await releaseLevel(this.#session, this.key, mode, { signal });
      this.#levels[mode]--;
      return true;
    } catch (error) {
      if (error instanceof LockNotHeldError) this.#levels[mode] = 0;
      throw error;
    } finally {
      this.#releasing[mode]--;
    }
  }
}
