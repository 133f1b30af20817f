/**
 * Locker: many locks over a few sessions. Handles in one Locker conflict exactly as separate
 * processes would; contention inside the Locker is queued locally, so at most one request per key
 * is on the server. Loss of a session aborts the signal of every handle it carried.
 */
import { lockError, releaseLevel, tryLock, waitForLock } from "../acquire.js";
import type { PoolDatabase } from "../database.js";
import { DEFAULT_DEADLOCK_TIMEOUT_MS, DeadlockWatch } from "../deadlock.js";
import { ClosedError, ConnectionError, InvalidArgumentError, LockLostError, sessionEndedError } from "../errors.js";
import { applicationNameOf, newOwner } from "../identity.js";
import type { LockKey, LockKeyInput } from "../key.js";
import { LIVENESS_OPTIONS, type Liveness, type LivenessOptions, liveness } from "../liveness.js";
import { LeaderElection } from "../patterns/leader.js";
import { notifierOf } from "../patterns/notifier.js";
import { Semaphore } from "../patterns/semaphore.js";
import { PendingCalls } from "../pending.js";
import type { Driver } from "../session/driver.js";
import { driverFor } from "../session/drivers.js";
import { Session } from "../session/session.js";
import { sharedController } from "../signals.js";
import type { LockMode, Statement } from "../sql.js";
import * as sql from "../sql.js";
import { type HeldLock, registerHeld } from "../task.js";
import { checkBoolean, checkInteger, checkMs, checkString, checkTableName, optionsObject } from "../validate.js";
import { readLocks } from "../waits.js";
import {
  acquireAll,
  type LockGroup,
  parseAcquire,
  type TaskOptions,
  timedAcquire,
  tracedTryAcquire,
  tryWithLock,
  withLock,
} from "./compose.js";
import { publishAcquired, publishLost, publishReleased } from "./events.js";
import { FencingTokens } from "./fencing.js";
import type { LockHandle } from "./handle.js";
import { SessionPool, type Slot } from "./sessions.js";

export interface LockerOptions extends LivenessOptions {
  /**
   * Most connections the Locker takes from the pool at once (default 4). From a pg.Pool, at most the
   * pool's `max` - 1: one connection always stays for the application (a pool of max 1 is refused).
   */
  maxSessions?: number;
  /**
   * The name that begins the application_name of the Locker's sessions (default `pglock`). pglock
   * adds who it is: `<name> <host>:<process id> locker-<n>`, at most 63 bytes (see identity.ts).
   */
  applicationName?: string;
  /**
   * A session that holds nothing goes back after this many ms: to the pg.Pool (default 1000), or,
   * with postgres.js, its connection is ended (default 10000, since the next session must reconnect).
   */
  idleMs?: number;
  /** The table that keeps fencing tokens, created on first use (default `pglock_fencing`). */
  fencingTable?: string;
  /**
   * How long a wait on the server by a task that holds other locks lasts before the Locker looks for
   * a deadlock, and how often it looks again while the wait goes on (default 1000; 0: never look).
   * A cycle is reported only when every task in it is known to hold what the next one waits for
   * (nested `withLock` calls, or `holding`); one victim per cycle rejects with `DeadlockError`.
   */
  deadlockTimeoutMs?: number;
  /**
   * A task that takes a key it already holds on this Locker gets one more level of that lock,
   * instead of an `AlreadyHeldError` (default false). Per call: `acquire(key, { reentrant })`.
   */
  reentrant?: boolean;
}

export interface AcquireOptions extends TaskOptions {
  /** Take the lock shared: shared holders coexist; an exclusive holder excludes everyone. */
  shared?: boolean;
  /**
   * Give the handle a `fencingToken`: a bigint that strictly increases per key across every holder
   * ever (exclusive locks only). Kept in the table named by the Locker's `fencingTable`.
   */
  fencing?: boolean;
  /** Give up after this many ms with a `LockTimeoutError`; the server-side wait is cancelled. */
  timeout?: number;
  /** Aborting it gives up with `signal.reason`; the server-side wait is cancelled. */
  signal?: AbortSignal;
}

export interface TryAcquireOptions extends TaskOptions {
  shared?: boolean;
  signal?: AbortSignal;
}

export interface LockerStats {
  /** Connections the Locker holds now. */
  sessions: number;
  /** Handles held now. */
  held: number;
  /** Acquires not yet granted. */
  waiting: number;
}

interface KeyState {
  readonly key: LockKey;
  /** The mode the Locker holds on the server, while it holds the key. */
  mode: LockMode | undefined;
  slot: Slot | undefined;
  readonly holders: Set<Holder>;
  /** A server statement for this key (acquire or release) is in flight. */
  busy: boolean;
  readonly queue: Queued[];
}

interface Queued {
  readonly mode: LockMode;
  readonly holding: readonly HeldLock[];
  readonly signal: AbortSignal;
  readonly startedAt: number;
  resolve(holder: Holder | undefined): void;
  reject(error: unknown): void;
  /** Detaches the queue's abort handling when the request leaves the queue. */
  dequeued(): void;
}

/**
 * Creates a Locker over a `pg.Pool`.
 *
 * @example
 * const locker = createLocker(pool);
 * await locker.withLock("nightly-report", async (signal) => buildReport({ signal }), { timeout: 5000 });
 */
export function createLocker(pool: PoolDatabase, options: LockerOptions = {}): Locker {
  return new Locker(pool, options);
}

export class Locker {
  readonly #sessions: SessionPool;
  readonly #driver: Driver;
  readonly #fencing: FencingTokens;
  readonly #applicationName: string;
  readonly #serverSettings: Liveness["serverSettings"];
  readonly #deadlock: DeadlockWatch;
  readonly #reentrant: boolean;
  /** What the deadlock look needs to know of the server once (readLocks). */
  readonly #server: { version?: number } = {};
  /** Sessions outside the pool of shared sessions (LISTEN); close() gives them back too. */
  readonly #dedicated = new Set<Session>();
  readonly #keys = new Map<string, KeyState>();
  readonly #slotKeys = new Map<Slot, Set<KeyState>>();
  readonly #closing = sharedController();
  readonly #pending = new PendingCalls();
  #held = 0;
  #waiting = 0;
  #closed: Promise<void> | undefined;

  /** @internal use {@link createLocker} */
  constructor(pool: unknown, options: LockerOptions = {}) {
    optionsObject(options, "createLocker", [
      "maxSessions",
      "applicationName",
      "idleMs",
      "fencingTable",
      "deadlockTimeoutMs",
      "reentrant",
      ...LIVENESS_OPTIONS,
    ]);
    const askedSessions = checkInteger(options.maxSessions, "createLocker", "options.maxSessions", 1);
    const { keepaliveMs, probeTimeoutMs, serverSettings } = liveness(options, "createLocker");
    const applicationName = checkString(options.applicationName, "createLocker", "applicationName") ?? "pglock";
    this.#fencing = new FencingTokens(
      checkTableName(options.fencingTable, "createLocker", "fencingTable") ?? "pglock_fencing",
    );
    this.#driver = driverFor(pool, "createLocker", { allowClient: false });
    const maxSessions = sessionCap(askedSessions, this.#driver.sharedPoolMax);
    const idleMs = checkMs(options.idleMs, "createLocker", "idleMs") ?? this.#driver.idleMs;
    this.#applicationName = applicationNameOf(newOwner("locker", applicationName));
    this.#deadlock = new DeadlockWatch(
      checkMs(options.deadlockTimeoutMs, "createLocker", "deadlockTimeoutMs") ?? DEFAULT_DEADLOCK_TIMEOUT_MS,
      () => readLocks((statement) => this.#query(statement), undefined, this.#server),
    );
    this.#reentrant = checkBoolean(options.reentrant, "createLocker", "reentrant") ?? false;
    this.#serverSettings = serverSettings;
    this.#sessions = new SessionPool(this.#driver, {
      maxSessions,
      idleMs,
      keepaliveMs,
      probeTimeoutMs,
      serverSettings,
      applicationName: this.#applicationName,
      onLost: (slot, reason) => this.#onSessionLost(slot, reason),
    });
  }

  /** Waits until the lock is granted; rejects with `LockTimeoutError` after `timeout` ms, or `signal.reason`. */
  acquire(key: LockKeyInput, options: AcquireOptions = {}): Promise<LockHandle> {
    return this.#track(async () => {
      const args = parseAcquire("acquire", key, options, this.#closing.signal.aborted, this.#task);
      if (args.level) return args.level;
      return timedAcquire(args, this.#closing.signal, async (signal, wait) => {
        const granted = await this.#request(args.key, args.mode, wait, signal, args.holding);
        if (granted && args.fencing) await this.#issueToken(granted);
        return granted;
      });
    });
  }

  /** Takes the lock if it is free now (in this Locker and on the server); null otherwise. */
  tryAcquire(key: LockKeyInput, options: TryAcquireOptions = {}): Promise<LockHandle | null> {
    return this.#track(async () => {
      const args = parseAcquire("tryAcquire", key, options, this.#closing.signal.aborted, this.#task);
      if (args.level) return args.level;
      return tracedTryAcquire(args, this.#closing.signal, (signal) =>
        this.#request(args.key, args.mode, false, signal, args.holding),
      );
    });
  }

  /**
   * Runs `fn` while holding the lock and releases it in every path. `fn` gets the handle's signal,
   * aborted if the lock is lost. Rejects with `LockLostError` if the lock was lost before `fn`
   * settled, even if `fn` resolved: the critical section was not protected.
   */
  async withLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: AcquireOptions = {},
  ): Promise<T> {
    return withLock(this, key, fn, options);
  }

  /**
   * Runs `fn` only if the lock is free now: the scheduled-job and run-once patterns.
   * Resolves `{ acquired: false }` without running `fn`, or `{ acquired: true, value }`.
   * Loss while `fn` runs rejects with `LockLostError`, as in {@link withLock}.
   */
  async tryWithLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: TryAcquireOptions = {},
  ): Promise<{ acquired: false } | { acquired: true; value: T }> {
    return tryWithLock(this, key, fn, options);
  }

  /**
   * Takes every key or none, within one `timeout`. Keys are taken in one canonical order (int64
   * keys ascending, then pairs), so two callers with overlapping sets cannot deadlock each other.
   * The group's `signal` aborts if any of its locks is lost.
   */
  acquireAll(keys: readonly LockKeyInput[], options: AcquireOptions = {}): Promise<LockGroup> {
    return acquireAll(keys, options, (key, opts) => this.acquire(key, opts));
  }

  get #task() {
    return { owner: this, reentrant: this.#reentrant };
  }

  stats(): LockerStats {
    let queued = 0;
    for (const state of this.#keys.values()) queued += state.queue.length;
    return { sessions: this.#sessions.size, held: this.#held, waiting: this.#waiting + queued };
  }

  /** Rejects pending acquires with `ClosedError`, releases every lock, gives every session back. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close() {
    this.#closing.abort(new ClosedError("the Locker"));
    await this.#pending.settled();
    const lost = new LockLostError("the Locker was closed while the lock was held");
    for (const state of this.#keys.values()) this.#loseHolders(state, lost);
    await Promise.all([...this.#dedicated].map((session) => session.release()));
    await this.#sessions.close(async (slot) => {
      if (slot.session.isLost) return;
      const outcome = await slot.session.run(sql.unlockAll());
      if (outcome.status !== "done") {
        await slot.session.discard(new ConnectionError("could not release locks on close", { cause: outcome }));
      }
    });
  }

  /**
   * A semaphore of `permits` slots named `name`, shared by every process that uses the same name.
   * @example
   * const uploads = locker.semaphore("uploads", 3);
   * await using slot = await uploads.acquire({ timeout: 10_000 });
   */
  semaphore(name: string, permits: number): Semaphore {
    return new Semaphore(this, notifierOf(this), name, permits);
  }

  /**
   * A leader election on `name`: `run(duties, { signal })` leads when elected, campaigns again on loss.
   * @example
   * const election = locker.leaderElection("billing-scheduler");
   * election.on("elected", () => log("leading"));
   * await election.run(async (signal) => { while (!signal.aborted) await tick(signal); }, { signal: shutdown });
   */
  leaderElection(name: LockKeyInput): LeaderElection {
    return new LeaderElection(this, name);
  }

  /** @internal a session of its own, outside the multiplexing rules (a LISTEN connection). */
  async openDedicatedSession(): Promise<Session> {
    if (this.#closing.signal.aborted) throw new ClosedError("the Locker");
    const session = await Session.open(this.#driver, {
      applicationName: this.#applicationName,
      serverSettings: this.#serverSettings,
    });
    this.#dedicated.add(session);
    session.lostSignal.addEventListener("abort", () => this.#dedicated.delete(session), { once: true });
    if (this.#closing.signal.aborted) {
      await session.release();
      throw new ClosedError("the Locker");
    }
    return session;
  }

  /** @internal gives back a session from openDedicatedSession(). */
  async releaseDedicatedSession(session: Session): Promise<void> {
    this.#dedicated.delete(session);
    await session.release();
  }

  /** @internal runs one short statement on a Locker session (a NOTIFY). */
  async runShort(statement: Statement): Promise<void> {
    await this.#query(statement);
  }

  async #query(statement: Statement): Promise<Record<string, unknown>[]> {
    const slot = await this.#sessions.forShortStatement(this.#closing.signal);
    try {
      return await slot.session.query(statement);
    } finally {
      this.#sessions.done(slot);
    }
  }

  /**
   * A server-side wait. When the waiting task holds locks on the server, the wait says so in its
   * text, and the deadlock check watches it (deadlock.ts).
   */
  #waitOnServer(slot: Slot, key: LockKey, mode: LockMode, signal: AbortSignal, holding: readonly HeldLock[]) {
    const session = slot.session;
    const wait = { pid: session.backendPid, key, cancel: () => session.cancelWait() };
    const holds = () => serverHolds(holding);
    return this.#deadlock.run(wait, holds().length > 0, (interrupted) =>
      waitForLock(session, key, mode, { signal, interrupted, holds }),
    );
  }

  /**
   * The token is drawn on the session that holds the lock: if that session has died, the statement
   * fails, so a holder that lost its lock can never draw a token after (and so above) its successor.
   */
  async #issueToken(holder: Holder) {
    try {
      const slot = this.#keys.get(holder.key.identity)?.slot;
      if (!slot || holder.signal.aborted)
        throw holder.signal.reason ?? new LockLostError(`lock ${holder.key} was lost`);
      this.#sessions.use(slot);
      try {
        holder.fencingToken = await this.#fencing.next(slot.session, holder.key);
      } finally {
        this.#sessions.done(slot);
      }
      // The session can be declared lost (e.g. by the liveness probe) while the token statement is in
      // flight, and that statement can still complete: such a holder must not be handed out as a
      // grant. Seen in a 5-minute chaos run: acquire resolved with a handle whose signal was already
      // aborted, and the server had given the lock to the next waiter.
      if (holder.signal.aborted) throw holder.signal.reason;
    } catch (error) {
      await holder.release().catch(() => {});
      throw error;
    }
  }

  #track<T>(run: () => Promise<T>): Promise<T> {
    return this.#pending.track(run());
  }

  #stateOf(key: LockKey): KeyState {
    let state = this.#keys.get(key.identity);
    if (!state) {
      state = { key, mode: undefined, slot: undefined, holders: new Set(), busy: false, queue: [] };
      this.#keys.set(key.identity, state);
    }
    return state;
  }

  /** Local arbitration first: the server sees one request per key at a time. */
  #request(
    key: LockKey,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    holding: readonly HeldLock[],
  ): Promise<Holder | undefined> {
    const state = this.#stateOf(key);
    const startedAt = performance.now();
    if (this.#canJoin(state, mode)) return Promise.resolve(this.#grant(state, startedAt));
    if (state.holders.size === 0 && !state.busy && state.queue.length === 0) {
      return this.#acquireOnServer(state, mode, wait, signal, startedAt, holding);
    }
    if (!wait) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const index = state.queue.indexOf(queued);
        if (index >= 0) state.queue.splice(index, 1);
        this.#forgetIfUnused(state);
        reject(signal.reason);
      };
      // Once dequeued, the request's outcome is the server phase's alone: a late abort is handled there
      // (cancel, then release a grant that won), never by rejecting a request that may still be granted.
      const dequeued = () => signal.removeEventListener("abort", onAbort);
      const queued: Queued = {
        mode,
        holding,
        signal,
        startedAt,
        resolve: (holder) => {
          dequeued();
          resolve(holder);
        },
        reject: (error) => {
          dequeued();
          reject(error);
        },
        dequeued,
      };
      signal.addEventListener("abort", onAbort, { once: true });
      state.queue.push(queued);
    });
  }

  /** A shared request joins shared holders of this Locker unless someone queued ahead of it. */
  #canJoin(state: KeyState, mode: LockMode): boolean {
    return (
      mode === "shared" && state.mode === "shared" && state.holders.size > 0 && !state.busy && state.queue.length === 0
    );
  }

  async #acquireOnServer(
    state: KeyState,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    startedAt: number,
    holding: readonly HeldLock[],
  ) {
    state.busy = true;
    this.#waiting++;
    try {
      const slot = await this.#takeOnServer(state.key, mode, wait, signal, holding);
      if (!slot) return undefined;
      state.slot = slot;
      state.mode = mode;
      const keys = this.#slotKeys.get(slot) ?? new Set<KeyState>();
      this.#slotKeys.set(slot, keys);
      keys.add(state);
      return this.#grant(state, startedAt);
    } finally {
      this.#waiting--;
      state.busy = false;
      this.#drain(state);
    }
  }

  /**
   * A try-lock on a session that is not waiting; if refused and `wait`, a server-side wait on a
   * session that holds nothing. When the session rules allow no wait now (every other session
   * already waits), it polls with try-locks, backing off to 250 ms.
   */
  async #takeOnServer(
    key: LockKey,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    holding: readonly HeldLock[],
  ): Promise<Slot | undefined> {
    // When an idle session may wait, wait right away: a free key is granted at once, and a busy one
    // is handed over by the server without the round trip of a try-lock first.
    const idle = wait ? await this.#sessions.forWait({ open: false }) : undefined;
    if (idle) {
      try {
        await this.#waitOnServer(idle, key, mode, signal, holding);
        idle.held++;
        if (!idle.session.isLost) return idle;
      } catch (error) {
        if (!retryable(idle, error, signal)) throw error;
      } finally {
        this.#sessions.done(idle);
      }
    }
    for (let delay = 5; ; delay = Math.min(delay * 2, 250)) {
      const slot = await this.#sessions.forShortStatement(signal);
      let granted: boolean;
      try {
        granted = await tryLock(slot.session, key, mode, signal);
        if (granted) slot.held++;
      } catch (error) {
        if (retryable(slot, error, signal)) continue;
        throw error;
      } finally {
        this.#sessions.done(slot);
      }
      // A grant on a session that ended in the meantime is no grant: try again.
      if (granted) {
        if (slot.session.isLost) continue;
        return slot;
      }
      if (!wait) return undefined;
      const waitSlot = await this.#sessions.forWait({ signal });
      if (waitSlot) {
        try {
          await this.#waitOnServer(waitSlot, key, mode, signal, holding);
          waitSlot.held++;
        } catch (error) {
          if (retryable(waitSlot, error, signal)) continue;
          throw error;
        } finally {
          this.#sessions.done(waitSlot);
        }
        if (waitSlot.session.isLost) continue;
        return waitSlot;
      }
      await sleep(delay, signal);
    }
  }

  #grant(state: KeyState, startedAt: number): Holder {
    const holder = new Holder(this, state, state.mode === "shared");
    registerHeld(holder, {
      owner: this,
      key: state.key,
      shared: holder.shared,
      handle: holder,
      isHeld: () => holder.held,
      backendPid: () => (holder.held ? state.slot?.session.backendPid : undefined),
    });
    state.holders.add(holder);
    this.#held++;
    publishAcquired(() => ({
      handle: holder,
      key: state.key,
      shared: holder.shared,
      waitMs: performance.now() - startedAt,
    }));
    return holder;
  }

  /** Lets queued requests proceed: shared ones join shared holders; the head goes to the server when the key is free. */
  #drain(state: KeyState) {
    while (state.queue.length > 0 && !state.busy) {
      const head = state.queue[0] as Queued;
      if (head.mode === "shared" && state.mode === "shared" && state.holders.size > 0) {
        state.queue.shift();
        head.resolve(this.#grant(state, head.startedAt));
        continue;
      }
      if (state.holders.size > 0) break;
      state.queue.shift();
      head.dequeued();
      this.#acquireOnServer(state, head.mode, true, head.signal, head.startedAt, head.holding).then(
        head.resolve,
        head.reject,
      );
    }
    this.#forgetIfUnused(state);
  }

  #forgetIfUnused(state: KeyState) {
    if (state.holders.size === 0 && !state.busy && state.queue.length === 0 && state.slot === undefined) {
      this.#keys.delete(state.key.identity);
    }
  }

  /** @internal */
  async release(holder: Holder, state: KeyState): Promise<void> {
    state.holders.delete(holder);
    this.#held--;
    publishReleased(() => ({
      handle: holder,
      key: state.key,
      shared: holder.shared,
      heldMs: performance.now() - holder.grantedAt,
    }));
    if (state.holders.size > 0) return;
    const slot = state.slot as Slot;
    const mode = state.mode as LockMode;
    state.busy = true;
    this.#sessions.use(slot);
    try {
      await releaseLevel(slot.session, state.key, mode);
    } catch (error) {
      // A session that ended released the lock with it: what the caller asked for is true.
      if (!slot.session.isLost) throw lockError(error, state.key);
    } finally {
      slot.held--;
      this.#slotKeys.get(slot)?.delete(state);
      state.slot = undefined;
      state.mode = undefined;
      state.busy = false;
      this.#sessions.done(slot);
      this.#drain(state);
    }
  }

  #onSessionLost(slot: Slot, reason: unknown) {
    const states = this.#slotKeys.get(slot);
    this.#slotKeys.delete(slot);
    if (!states) return;
    for (const state of states) {
      this.#loseHolders(state, sessionEndedError(state.key, reason));
      state.slot = undefined;
      state.mode = undefined;
      this.#drain(state);
    }
  }

  #loseHolders(state: KeyState, error: LockLostError) {
    for (const holder of state.holders) {
      holder.lose(error);
      this.#held--;
      publishLost(() => ({ handle: holder, key: state.key, shared: holder.shared, error }));
    }
    state.holders.clear();
  }
}

class Holder implements LockHandle {
  readonly key: LockKey;
  readonly shared: boolean;
  fencingToken: bigint | undefined;
  readonly grantedAt = performance.now();
  readonly #locker: Locker;
  readonly #state: KeyState;
  /** Created on first use: most handles are released without anyone reading their signal. */
  #lost: AbortController | undefined;
  #released: Promise<void> | undefined;

  constructor(locker: Locker, state: KeyState, shared: boolean) {
    this.#locker = locker;
    this.#state = state;
    this.key = state.key;
    this.shared = shared;
  }

  get signal(): AbortSignal {
    this.#lost ??= new AbortController();
    return this.#lost.signal;
  }

  /** Neither released nor lost. */
  get held(): boolean {
    return this.#released === undefined;
  }

  release(): Promise<void> {
    this.#released ??= this.#lost?.signal.aborted ? Promise.resolve() : this.#locker.release(this, this.#state);
    return this.#released;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** @internal */
  lose(error: LockLostError) {
    this.#released ??= Promise.resolve();
    this.#lost ??= new AbortController();
    this.#lost.abort(error);
  }
}

/**
 * How many sessions a Locker may take. From a pool it shares with the application, never the last
 * connection: holders' work usually queries the same pool, and a Locker holding every connection
 * would wait for a release that only that work can bring (issue #23: 30 withLock calls on a pool of
 * 2 hung for 10 minutes).
 */
function sessionCap(asked: number | undefined, poolMax: number | undefined): number {
  if (poolMax === undefined) return asked ?? DEFAULT_MAX_SESSIONS;
  if (poolMax < 2) {
    throw new InvalidArgumentError(
      `createLocker: the pg.Pool has max ${poolMax}, so the Locker would take the connection that the work under ` +
        "its locks needs; give the pool max >= 2 (the Locker then takes at most max - 1), or give the Locker a pool of its own",
    );
  }
  if (asked !== undefined && asked > poolMax - 1) {
    throw new InvalidArgumentError(
      `createLocker: options.maxSessions must leave the application one of the pool's ${poolMax} connections ` +
        `(at most ${poolMax - 1}), got ${asked}; raise the pool's max, or give the Locker a pool of its own`,
    );
  }
  return Math.min(asked ?? DEFAULT_MAX_SESSIONS, poolMax - 1);
}

const DEFAULT_MAX_SESSIONS = 4;

/** The locks of `holding` held on the server, as the sessions that hold them and their keys. */
function serverHolds(holding: readonly HeldLock[]): { pid: number; key: LockKey }[] {
  const holds: { pid: number; key: LockKey }[] = [];
  for (const held of holding) {
    const pid = held.backendPid();
    if (pid !== undefined) holds.push({ pid, key: held.key });
  }
  return holds;
}

function retryable(slot: Slot, error: unknown, signal: AbortSignal): boolean {
  return !signal.aborted && slot.session.isLost && error instanceof ConnectionError;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
