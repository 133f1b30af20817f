/**
 * The lease Locker: the Locker's interface on a lease table instead of session locks, for where no
 * server session stays yours (transaction poolers, serverless functions, HTTP drivers). Each handle
 * is a lease with a TTL on the server's clock, renewed in the background; each statement is one short
 * transaction on whatever connection the driver gives (lease/sql.ts).
 *
 * The holder is told before anyone else can take the lease: the handle's signal aborts at a deadline
 * that this process measures on its own monotonic clock, from before the statement that granted or
 * last renewed the lease was sent, to `expiryMarginMs` before the TTL ends. The server can only have
 * started the lease's TTL later than that. This assumes that over one TTL this process's clock runs
 * slower than the server's by less than the margin, timer lateness (a blocked event loop) included.
 * A lease is never re-acquired behind the holder's back: once lost, it stays lost.
 */

import type { PoolDatabase } from "../database.js";
import {
  ClosedError,
  ConnectionError,
  DatabaseError,
  InvalidArgumentError,
  LockLostError,
  LockNotHeldError,
} from "../errors.js";
import { leaseHolderPrefix } from "../identity.js";
import type { LockKey, LockKeyInput } from "../key.js";
import {
  acquireAll,
  type LockGroup,
  parseAcquire,
  timedAcquire,
  tracedTryAcquire,
  tryWithLock,
  withLock,
} from "../locker/compose.js";
import { publishAcquired, publishLost, publishReleased } from "../locker/events.js";
import type { LockHandle } from "../locker/handle.js";
import type { AcquireOptions, LockerStats, TryAcquireOptions } from "../locker/locker.js";
import { LeaderElection } from "../patterns/leader.js";
import { Semaphore } from "../patterns/semaphore.js";
import { PendingCalls, settleWithin } from "../pending.js";
import { sqlState } from "../session/driver.js";
import { sharedController } from "../signals.js";
import type { LockMode } from "../sql.js";
import { registerHeld } from "../task.js";
import { checkBoolean, checkInteger, checkMs, checkString, optionsObject } from "../validate.js";
import { type LeaseQuery, leaseQueryFor, type QueryFunction } from "./query.js";
import { CLEAN_UP_BATCH, checkLeaseTable, LEASE_TIMELINE_SHIFT, type LeaseStatements, leaseStatements } from "./sql.js";
import { localWakeups, pause, wake } from "./wakeups.js";

export interface LeaseLockerOptions {
  /** How long a lease lasts on the server without renewal, in ms (default 30000, at least 100). */
  ttlMs?: number;
  /** How often a held lease is renewed, in ms (default a third of `ttlMs`). */
  renewEveryMs?: number;
  /**
   * How long before the TTL ends the holder is told its lease is lost when no renewal succeeded
   * (default a fifth of `ttlMs`): the room for clock drift and a late timer. See the module comment.
   */
  expiryMarginMs?: number;
  /** The longest pause between two tries of a waiting acquire, in ms (default 1000); pauses start at 5 ms. */
  maxPollMs?: number;
  /** The lease table, created on first use with its `<table>_token` sequence (default `pglock_leases`). */
  table?: string;
  /** The name that begins every holder id, as in `pglock ls` (default `pglock`). */
  applicationName?: string;
  /** As the Locker's: a task re-taking a key it holds gets one more level (default false). */
  reentrant?: boolean;
}

/** Most leases one renewal statement carries, and most renewal statements out at once. */
const RENEW_BATCH = 1_000;
const RENEWALS_OUT = 2;

/** The longest TTL: one day. */
const MAX_TTL_MS = 86_400_000;

/** A waiting acquire's first pause; pauses double from there up to maxPollMs, with jitter. */
const FIRST_POLL_MS = 5;
/** Expired rows are deleted by a Locker at most this often, after one of its grants. */
const CLEAN_UP_EVERY_MS = 10_000;
/** At most this many batches per clean-up (CLEAN_UP_BATCH rows each): the rest waits for the next. */
const CLEAN_UP_MAX_BATCHES = 100;

/**
 * Creates a lease Locker over a `pg.Pool`, a postgres.js `sql`, a Bun `SQL` or a query function.
 *
 * @example
 * const locker = createLeaseLocker(pool, { ttlMs: 15_000 });
 * await locker.withLock("nightly-report", async (signal) => buildReport({ signal }), { timeout: 5000 });
 */
export function createLeaseLocker(db: PoolDatabase | QueryFunction, options: LeaseLockerOptions = {}): LeaseLocker {
  return new LeaseLocker(db, options);
}

export class LeaseLocker {
  /** The settings in force, after defaults. */
  readonly ttlMs: number;
  readonly renewEveryMs: number;
  readonly expiryMarginMs: number;
  readonly #maxPollMs: number;
  readonly #query: LeaseQuery;
  readonly #sql: LeaseStatements;
  readonly #table: string;
  readonly #holderPrefix: string;
  readonly #reentrant: boolean;
  readonly #closing = sharedController();
  readonly #pending = new PendingCalls();
  readonly #held = new Set<Lease>();
  #holders = 0;
  #waiting = 0;
  /** Renewals waiting to be sent, and batches out (renewOnServer). */
  readonly #renewals: { handle: Lease; resolve(renewed: boolean): void; reject(error: unknown): void }[] = [];
  #renewalsOut = 0;
  #created: Promise<void> | undefined;
  #lastCleanUp = Number.NEGATIVE_INFINITY;
  #announced: Promise<void> | undefined;
  #closed: Promise<void> | undefined;

  /** @internal use {@link createLeaseLocker} */
  constructor(db: unknown, options: LeaseLockerOptions = {}) {
    const where = "createLeaseLocker";
    optionsObject(options, where, [
      "ttlMs",
      "renewEveryMs",
      "expiryMarginMs",
      "maxPollMs",
      "table",
      "applicationName",
      "reentrant",
    ]);
    // At most a day: a lease longer than that outlives any holder worth waiting for, and timers over
    // 2^31 - 1 ms fire at once (issue #26: a 36-day TTL failed every statement).
    this.ttlMs = checkInteger(options.ttlMs, where, "options.ttlMs", 100, MAX_TTL_MS) ?? 30_000;
    this.renewEveryMs = checkMs(options.renewEveryMs, where, "renewEveryMs") ?? Math.floor(this.ttlMs / 3);
    this.expiryMarginMs = checkMs(options.expiryMarginMs, where, "expiryMarginMs") ?? Math.floor(this.ttlMs / 5);
    this.#maxPollMs = checkMs(options.maxPollMs, where, "maxPollMs") ?? 1000;
    if (this.renewEveryMs < 1 || this.renewEveryMs >= this.ttlMs - this.expiryMarginMs) {
      throw new InvalidArgumentError(
        `${where}: options.renewEveryMs must be at least 1 and less than ttlMs - expiryMarginMs ` +
          `(${this.ttlMs} - ${this.expiryMarginMs}), so that a renewal can land before the holder's deadline, got ${this.renewEveryMs}`,
      );
    }
    this.#table = options.table === undefined ? "pglock_leases" : checkLeaseTable(options.table, where, "table");
    this.#sql = leaseStatements(this.#table);
    this.#holderPrefix = leaseHolderPrefix(checkString(options.applicationName, where, "applicationName") ?? "pglock");
    this.#query = leaseQueryFor(db, where);
    this.#reentrant = checkBoolean(options.reentrant, where, "reentrant") ?? false;
  }

  /** Waits until the lease is granted; rejects with `LockTimeoutError` after `timeout` ms, or `signal.reason`. */
  acquire(key: LockKeyInput, options: AcquireOptions = {}): Promise<LeaseHandle> {
    return this.#track(async () => {
      const args = parseAcquire("acquire", key, options, this.#closing.signal.aborted, this.#task);
      if (args.level) return args.level as LeaseHandle;
      return timedAcquire(args, this.#closing.signal, (signal, wait) =>
        this.#request(args.key, args.mode, wait, signal),
      );
    });
  }

  /** Takes the lease if nobody holds it now; null otherwise. */
  tryAcquire(key: LockKeyInput, options: TryAcquireOptions = {}): Promise<LeaseHandle | null> {
    return this.#track(async () => {
      const args = parseAcquire("tryAcquire", key, options, this.#closing.signal.aborted, this.#task);
      if (args.level) return args.level as LeaseHandle;
      return tracedTryAcquire(args, this.#closing.signal, (signal) =>
        this.#request(args.key, args.mode, false, signal),
      );
    });
  }

  get #task() {
    return { owner: this, reentrant: this.#reentrant };
  }

  /** Runs `fn` holding the lease and releases it in every path; as the Locker's withLock. */
  async withLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: AcquireOptions = {},
  ): Promise<T> {
    return withLock(this, key, fn, options);
  }

  /** Runs `fn` only if the lease is free now; as the Locker's tryWithLock. */
  async tryWithLock<T>(
    key: LockKeyInput,
    fn: (signal: AbortSignal) => Promise<T> | T,
    options: TryAcquireOptions = {},
  ): Promise<{ acquired: false } | { acquired: true; value: T }> {
    return tryWithLock(this, key, fn, options);
  }

  /** Takes every key or none, in one canonical order, within one `timeout`; as the Locker's acquireAll. */
  acquireAll(keys: readonly LockKeyInput[], options: AcquireOptions = {}): Promise<LockGroup> {
    return acquireAll(keys, options, (key, opts) => this.acquire(key, opts));
  }

  /** A semaphore of `permits` leases named `name` (the slot keys of the session Locker's semaphore). */
  semaphore(name: string, permits: number): Semaphore {
    return new Semaphore(this, localWakeups(this.#table), name, permits);
  }

  /** A leader election on `name`: the holder of the lease leads. A dead leader's lease expires after `ttlMs`. */
  leaderElection(name: LockKeyInput): LeaderElection {
    return new LeaderElection(this, name);
  }

  stats(): LockerStats {
    return { sessions: 0, held: this.#held.size, waiting: this.#waiting };
  }

  /** Rejects pending acquires with `ClosedError`, releases every lease. Idempotent. */
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
    // Each lost handle takes its entry back (lost() → #forget, tracked): wait for those statements,
    // and for grants given up on that may still commit, and the clean-ups they then need (#bounded).
    for (const handle of [...this.#held]) handle.lose(lost);
    await this.#pending.drained();
  }

  #track<T>(run: () => Promise<T>): Promise<T> {
    return this.#pending.track(run());
  }

  /** Tries, and while `wait`, tries again after pauses that double up to maxPollMs (or a local release). */
  async #request(key: LockKey, mode: LockMode, wait: boolean, signal: AbortSignal): Promise<Lease | undefined> {
    const holder = `${this.#holderPrefix}-${++this.#holders}`;
    const startedAt = performance.now();
    this.#waiting++;
    try {
      for (let delay = FIRST_POLL_MS; ; delay = Math.min(delay * 2, this.#maxPollMs)) {
        signal.throwIfAborted();
        const sentAt = performance.now();
        let token: bigint | undefined;
        try {
          token = await this.#grant(key, holder, mode, signal);
        } catch (error) {
          // The grant may have committed and its answer been lost, or come after the caller gave up
          // (a timeout, an abort, close()): take the entry back (best effort), or it would block others
          // for a whole TTL. Never handed out.
          this.#forget(key, holder);
          throw error;
        }
        // An answer that came after the holder's deadline proves nothing any more: not a grant.
        if (token !== undefined && performance.now() >= sentAt + this.ttlMs - this.expiryMarginMs) {
          this.#forget(key, holder);
          token = undefined;
        }
        if (token !== undefined) {
          const handle = new Lease(this, key, holder, mode === "shared", token, sentAt);
          this.#held.add(handle);
          publishAcquired(() => ({ handle, key, shared: handle.shared, waitMs: performance.now() - startedAt }));
          this.#cleanUpNowAndThen();
          return handle;
        }
        if (!wait) return undefined;
        // Full jitter in [delay/2, delay): waiters that started together do not poll together.
        await pause(this.#table, key, delay / 2 + (Math.random() * delay) / 2, signal);
      }
    } finally {
      this.#waiting--;
    }
  }

  async #grant(key: LockKey, holder: string, mode: LockMode, signal: AbortSignal): Promise<bigint | undefined> {
    // Before the first grant, the table learns this Locker's TTL: clean-up keeps rows that long.
    this.#announced ??= this.#run(this.#sql.announceTtl, [this.ttlMs]).then(
      () => {},
      (error: unknown) => {
        this.#announced = undefined;
        throw error;
      },
    );
    await this.#announced;
    // A grant given up on may still commit after the caller's clean-up ran: clean up again once it
    // has settled, or its entry would block others for a whole TTL.
    const rows = await this.#run(this.#sql.acquire, [key.identity, holder, mode === "shared", this.ttlMs], signal, () =>
      this.#forget(key, holder),
    );
    const token = rows[0]?.token;
    return token === undefined ? undefined : BigInt(token as string);
  }

  /** @internal renews `handle`'s lease: true when renewed, false when the server no longer has it alive. */
  renewOnServer(handle: Lease): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#renewals.push({ handle, resolve, reject });
      // The renewals due in this turn of the event loop, and those due while a batch is out, travel
      // together: one statement renews up to RENEW_BATCH leases (issue #26).
      if (this.#renewals.length === 1) setImmediate(() => this.#sendRenewals());
    });
  }

  #sendRenewals() {
    while (this.#renewals.length > 0 && this.#renewalsOut < RENEWALS_OUT) {
      const batch = this.#renewals.splice(0, RENEW_BATCH);
      this.#renewalsOut++;
      const keys = batch.map(({ handle }) => handle.key.identity);
      const holders = batch.map(({ handle }) => handle.holder);
      this.#run(this.#sql.renew, [keys, holders, this.ttlMs])
        .then(
          (rows) => {
            const renewed = new Set(rows.map((row) => String(row.renewed)));
            for (const { handle, resolve } of batch) resolve(renewed.has(`${handle.key.identity} ${handle.holder}`));
          },
          (error: unknown) => {
            for (const { reject } of batch) reject(error);
          },
        )
        .finally(() => {
          this.#renewalsOut--;
          this.#sendRenewals();
        });
    }
  }

  /** @internal */
  async release(handle: Lease): Promise<void> {
    this.#held.delete(handle);
    publishReleased(() => ({
      handle,
      key: handle.key,
      shared: handle.shared,
      heldMs: performance.now() - handle.grantedAt,
    }));
    if (!(await this.#releaseOnServer(handle))) {
      throw new LockNotHeldError(
        handle.key.toString(),
        "the lease table has no lease of this holder: it expired and was taken or cleaned up, or a failover lost it",
      );
    }
  }

  /** @internal a handle that lost its lease leaves the Locker; its entry is taken back if still there. */
  lost(handle: Lease, error: LockLostError) {
    if (!this.#held.delete(handle)) return;
    publishLost(() => ({ handle, key: handle.key, shared: handle.shared, error }));
    this.#forget(handle.key, handle.holder);
  }

  async #releaseOnServer(handle: Lease): Promise<boolean> {
    try {
      const rows = await this.#run(this.#sql.release, [handle.key.identity, handle.holder]);
      return Number(rows[0]?.released) > 0;
    } finally {
      wake(this.#table, handle.key);
    }
  }

  #forget(key: LockKey, holder: string) {
    this.#track(() => this.#run(this.#sql.release, [key.identity, holder])).then(
      () => wake(this.#table, key),
      () => {},
    );
  }

  /** Deletes rows whose holders all expired, at most once a minute per Locker, never waiting for it. */
  #cleanUpNowAndThen() {
    const now = performance.now();
    if (now - this.#lastCleanUp < CLEAN_UP_EVERY_MS) return;
    this.#lastCleanUp = now;
    // A full batch means more is waiting: delete on until a batch comes back short, so the table
    // keeps up with any grant rate (issue #26: 100 rows a minute let 5,000 expired rows pile up).
    this.#track(async () => {
      for (let batches = 0; batches < CLEAN_UP_MAX_BATCHES; batches++) {
        const rows = await this.#run(this.#sql.cleanUp, [this.ttlMs]);
        if (Number(rows[0]?.deleted ?? 0) < CLEAN_UP_BATCH) return;
      }
    }).catch(() => {});
  }

  /** Runs a statement; the first time the table is missing, creates it (and its sequence) and runs it again. */
  async #run(text: string, params: unknown[], signal?: AbortSignal, afterAbandoned?: () => void) {
    try {
      return await this.#bounded(text, params, signal, afterAbandoned);
    } catch (error) {
      if (sqlState((error as Error).cause) !== "42P01") throw error;
      // The table is there but its token sequence is gone (an operator dropped it): a new sequence
      // would start again at 1, below tokens already given. Refuse rather than go back (issue #26).
      if (String(((error as Error).cause as Error | undefined)?.message).includes(`${this.#table}_token"`)) {
        throw new DatabaseError(
          `the lease table's token sequence ${this.#table}_token is missing: pglock will not recreate it, since new ` +
            `tokens would start below those already given; recreate it above them: CREATE SEQUENCE ${this.#table}_token; ` +
            `SELECT setval('${this.#table}_token', (SELECT max(token) & ((1::int8 << ${LEASE_TIMELINE_SHIFT}) - 1) FROM ${this.#table}))`,
          { cause: (error as Error).cause },
        );
      }
      await this.#create();
      return await this.#bounded(text, params, signal, afterAbandoned);
    }
  }

  /**
   * A statement is given up on (its outcome unknown) when `signal` aborts, or after the time a lease
   * can be trusted for (ttlMs - expiryMarginMs): a later answer could prove nothing. A connection the
   * network dropped without a word (a black hole) would otherwise hang the call for minutes. The timer
   * also keeps the process alive while a statement is out: a driver may not (postgres.js, seen in the
   * chaos suite: the process exited mid-acquire with an unsettled await). `afterAbandoned` runs when a
   * statement given up on settles after all.
   */
  #bounded(
    text: string,
    params: unknown[],
    signal?: AbortSignal,
    afterAbandoned?: () => void,
  ): Promise<readonly Record<string, unknown>[]> {
    const limitMs = this.ttlMs - this.expiryMarginMs;
    const running = this.#query(text, params);
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const abandon = (reason: unknown) => {
        settle();
        reject(reason);
        // close() waits for the clean-up (bounded): the statement given up on can still commit, and
        // once the caller has ended its pool, no clean-up could take the entry back (issue #26: the
        // key then stayed taken by nobody for a whole TTL).
        if (afterAbandoned) this.#pending.track(settleWithin(limitMs, running.then(afterAbandoned, afterAbandoned)));
      };
      const onAbort = () => abandon(signal?.reason);
      const timer = setTimeout(
        () =>
          abandon(new ConnectionError(`a lease statement got no answer within ${limitMs} ms (ttlMs - expiryMarginMs)`)),
        limitMs,
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      running.then(
        (rows) => {
          settle();
          resolve(rows);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
  }

  #create(): Promise<void> {
    this.#created ??= (async () => {
      for (const statement of this.#sql.create) {
        try {
          await this.#query(statement, []);
        } catch (error) {
          // Created by another process at the same moment: it exists, which is what was wanted.
          const state = sqlState((error as Error).cause);
          if (state !== "23505" && state !== "42P07") throw error;
        }
      }
    })().catch((error: unknown) => {
      this.#created = undefined;
      throw error;
    });
    return this.#created;
  }
}

/** A held lease: a {@link LockHandle} whose fencing token is always there. */
export interface LeaseHandle extends LockHandle {
  /** Strictly increasing per key across every grant, drawn in the granting statement (lease/sql.ts). */
  readonly fencingToken: bigint;
}

/** A held lease. Its `signal` aborts with `LockLostError` when the lease can no longer be trusted. */
class Lease implements LeaseHandle {
  readonly key: LockKey;
  readonly shared: boolean;
  readonly fencingToken: bigint;
  readonly grantedAt = performance.now();
  /** @internal the holder id in the lease table. */
  readonly holder: string;
  readonly #locker: LeaseLocker;
  readonly #lost = new AbortController();
  /** performance.now() by which the lease must have been renewed, or the holder is told it is lost. */
  #deadline: number;
  #renewTimer: ReturnType<typeof setTimeout> | undefined;
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  #lastError: unknown;
  #released: Promise<void> | undefined;

  constructor(locker: LeaseLocker, key: LockKey, holder: string, shared: boolean, token: bigint, sentAt: number) {
    registerHeld(this, {
      owner: locker,
      key,
      shared,
      handle: this,
      isHeld: () => this.#released === undefined && !this.#lost.signal.aborted,
      backendPid: () => undefined,
    });
    this.#locker = locker;
    this.key = key;
    this.holder = holder;
    this.shared = shared;
    this.fencingToken = token;
    this.#deadline = sentAt + locker.ttlMs - locker.expiryMarginMs;
    this.#scheduleRenewal(sentAt + locker.renewEveryMs);
    this.#armDeadline();
  }

  get signal(): AbortSignal {
    // A timer can fire late (a blocked event loop); whoever looks at the signal after the deadline
    // sees the truth anyway.
    if (!this.#lost.signal.aborted && this.#released === undefined && performance.now() >= this.#deadline) {
      this.#expire();
    }
    return this.#lost.signal;
  }

  release(): Promise<void> {
    if (this.#released === undefined) {
      this.#stop();
      this.#released = this.signal.aborted ? Promise.resolve() : this.#locker.release(this);
    }
    return this.#released;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** @internal */
  lose(error: LockLostError) {
    if (this.#lost.signal.aborted) return;
    this.#stop();
    this.#released ??= Promise.resolve();
    this.#lost.abort(error);
    this.#locker.lost(this, error);
  }

  #stop() {
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#deadlineTimer);
  }

  #scheduleRenewal(at: number) {
    // Early, on a grid of a quarter of renewEveryMs that every lease of the process shares: leases
    // granted at different moments then renew at the same ones, in the same statement (renewOnServer).
    const grid = this.#locker.renewEveryMs / 4;
    const due = Math.floor(at / grid) * grid;
    this.#renewTimer = setTimeout(() => this.#renew(), Math.max(0, due - performance.now()));
    // A lease never keeps the process alive: if it exits, the lease expires after its TTL.
    this.#renewTimer.unref?.();
  }

  #armDeadline() {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(() => this.#expire(), Math.max(0, this.#deadline - performance.now()));
    this.#deadlineTimer.unref?.();
  }

  #renew() {
    const sentAt = performance.now();
    this.#locker.renewOnServer(this).then(
      (renewed) => {
        if (this.#released !== undefined) return;
        if (!renewed) {
          this.lose(
            new LockLostError(
              `the lease on ${this.key} was no longer held when renewed: it expired and may be someone else's`,
            ),
          );
          return;
        }
        this.#deadline = Math.max(this.#deadline, sentAt + this.#locker.ttlMs - this.#locker.expiryMarginMs);
        this.#armDeadline();
        this.#scheduleRenewal(sentAt + this.#locker.renewEveryMs);
      },
      (error: unknown) => {
        if (this.#released !== undefined) return;
        // Try again soon; the deadline, not this failure, decides when the holder is told.
        this.#lastError = error;
        this.#scheduleRenewal(performance.now() + Math.min(1000, this.#locker.renewEveryMs / 2));
      },
    );
  }

  #expire() {
    this.lose(
      new LockLostError(
        `the lease on ${this.key} could not be renewed in time: it must be treated as expired`,
        this.#lastError === undefined ? undefined : { cause: this.#lastError },
      ),
    );
  }
}
