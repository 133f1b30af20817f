/**
 * The lease Locker: the Locker's interface on a lease table instead of session locks, for where no
 * server session stays yours (transaction poolers, serverless functions, HTTP drivers). Each handle
 * is a lease with a TTL on the server's clock, renewed in the background; each statement is one short
 * transaction on whatever connection the driver gives (sql/lease.ts).
 *
 * The holder is told before anyone else can take the lease: the handle's signal aborts at a deadline
 * that this process measures on its own monotonic clock, from before the statement that granted or
 * last renewed the lease was sent, to `expiryMarginMs` before the TTL ends. The server can only have
 * started the lease's TTL later than that. This assumes that over one TTL this process's clock runs
 * slower than the server's by less than the margin, timer lateness (a blocked event loop) included.
 * A lease is never re-acquired behind the holder's back: once lost, it stays lost.
 */
import type { PoolDatabase } from "../database.js";
import { InvalidArgumentError } from "../errors.js";
import { leaseHolderPrefix } from "../identity.js";
import { LockerFacade } from "../locker/facade.js";
import { sharedController } from "../signals.js";
import { checkLeaseTable } from "../sql/lease.js";
import { checkBoolean, checkInteger, checkMs, checkString, optionsObject } from "../validate.js";
import { LeaseBackend } from "./backend.js";
import type { LeaseHandle } from "./lease.js";
import { leaseQueryFor, type QueryFunction } from "./query.js";

/** Options of `createLeaseLocker`. */
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

/** The longest TTL: one day. */
const MAX_TTL_MS = 86_400_000;

/**
 * Creates a lease Locker over a `pg.Pool`, a postgres.js `sql`, a Bun `SQL` or a query function.
 *
 * @throws InvalidArgumentError when an option breaks its rule (`renewEveryMs` must leave a renewal
 * time to land before the holder's deadline).
 * @example
 * const locker = createLeaseLocker(pool, { ttlMs: 15_000 });
 * await locker.withLock("nightly-report", async (signal) => buildReport({ signal }), { timeout: 5000 });
 */
export function createLeaseLocker(db: PoolDatabase | QueryFunction, options: LeaseLockerOptions = {}): LeaseLocker {
  return LeaseLocker.create(db, options);
}

/** The lease Locker: see {@link AnyLocker} for its methods. Its handles always have a fencing token. */
export class LeaseLocker extends LockerFacade<LeaseHandle> {
  /** How long a lease lasts on the server without renewal, in ms, after defaults. */
  readonly ttlMs: number;
  /** How often a held lease is renewed, in ms, after defaults. */
  readonly renewEveryMs: number;
  /** How long before its TTL ends a holder without a renewal is told its lease is lost, in ms, after defaults. */
  readonly expiryMarginMs: number;

  /** @internal */
  static create(db: PoolDatabase | QueryFunction, options: LeaseLockerOptions): LeaseLocker {
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
    const ttlMs = checkInteger(options.ttlMs, where, "options.ttlMs", 100, MAX_TTL_MS) ?? 30_000;
    const renewEveryMs = checkMs(options.renewEveryMs, where, "renewEveryMs") ?? Math.floor(ttlMs / 3);
    const expiryMarginMs = checkMs(options.expiryMarginMs, where, "expiryMarginMs") ?? Math.floor(ttlMs / 5);
    const maxPollMs = checkMs(options.maxPollMs, where, "maxPollMs") ?? 1000;
    if (renewEveryMs < 1 || renewEveryMs >= ttlMs - expiryMarginMs) {
      throw new InvalidArgumentError(
        `${where}: options.renewEveryMs must be at least 1 and less than ttlMs - expiryMarginMs ` +
          `(${ttlMs} - ${expiryMarginMs}), so that a renewal can land before the holder's deadline, got ${renewEveryMs}`,
      );
    }
    const table = options.table === undefined ? "pglock_leases" : checkLeaseTable(options.table, where, "table");
    const holderPrefix = leaseHolderPrefix(checkString(options.applicationName, where, "applicationName") ?? "pglock");
    const query = leaseQueryFor(db, where);
    const reentrant = checkBoolean(options.reentrant, where, "reentrant") ?? false;
    const backend = new LeaseBackend(query, { ttlMs, renewEveryMs, expiryMarginMs, maxPollMs, table, holderPrefix });
    return new LeaseLocker(backend, sharedController(), reentrant);
  }

  /** Use {@link createLeaseLocker}. */
  private constructor(backend: LeaseBackend, closing: AbortController, reentrant: boolean) {
    super(backend, closing, reentrant);
    this.ttlMs = backend.settings.ttlMs;
    this.renewEveryMs = backend.settings.renewEveryMs;
    this.expiryMarginMs = backend.settings.expiryMarginMs;
  }
}
