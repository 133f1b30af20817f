/**
 * The Locker on PostgreSQL advisory locks: many locks over a few sessions of a pool. Handles in one
 * Locker conflict exactly as separate processes would (advisory/backend.ts).
 */

import type { LockHandle } from "../contract/handle.js";
import type { PoolDatabase } from "../database.js";
import { DEFAULT_DEADLOCK_TIMEOUT_MS } from "../deadlock.js";
import { InvalidArgumentError } from "../errors.js";
import { applicationNameOf, newOwner } from "../identity.js";
import { LIVENESS_OPTIONS, type LivenessOptions, liveness } from "../liveness.js";
import { LockerFacade } from "../locker/facade.js";
import { driverFor } from "../session/drivers.js";
import { sharedController } from "../signals.js";
import { checkLeaseTable } from "../sql/lease.js";
import { checkBoolean, checkInteger, checkMs, checkString, checkTableName, optionsObject } from "../validate.js";
import { AdvisoryBackend } from "./backend.js";

/** Options of `createLocker`. */
export interface LockerOptions extends LivenessOptions {
  /**
   * Most connections the Locker takes from the pool at once (default 4). From a pg.Pool, at most the
   * pool's `max` - 1: one connection always stays for the application (a pool of max 1 is refused).
   */
  maxSessions?: number;
  /**
   * The name that begins the application_name of the Locker's sessions (default `pglock`). pglock
   * adds who it is: `<name> <host>:<process id>@<nonce> locker-<n>`, at most 63 bytes, which
   * `pglock ls` and `inspectLocks` read back.
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
   * The lease table, where a run with `atLeastMs` is recorded on the server's clock; created on first
   * use (default `pglock_leases`, the lease Locker's: a key kept by a run is kept from leases too).
   */
  leaseTable?: string;
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

/**
 * Creates a Locker over a `pg.Pool`, a postgres.js `sql` or a Bun `SQL`.
 *
 * @throws InvalidArgumentError when an option breaks its rule, or a `pg.Pool` has max 1 (the
 * Locker would take the connection the work under its locks needs).
 * @example
 * const locker = createLocker(pool);
 * await locker.withLock("nightly-report", async (signal) => buildReport({ signal }), { timeout: 5000 });
 */
export function createLocker(pool: PoolDatabase, options: LockerOptions = {}): Locker {
  return Locker.create(pool, options);
}

/**
 * The Locker on advisory session locks: see {@link AnyLocker} for its methods. A session it gives up
 * on (lost, silent past the liveness bound) aborts the `signal` of every handle that it carried.
 */
export class Locker extends LockerFacade<LockHandle> {
  /** @internal */
  static create(pool: PoolDatabase, options: LockerOptions): Locker {
    const where = "createLocker";
    optionsObject(options, where, [
      "maxSessions",
      "applicationName",
      "idleMs",
      "fencingTable",
      "leaseTable",
      "deadlockTimeoutMs",
      "reentrant",
      ...LIVENESS_OPTIONS,
    ]);
    const askedSessions = checkInteger(options.maxSessions, where, "options.maxSessions", 1);
    const { keepaliveMs, probeTimeoutMs, serverSettings } = liveness(options, where);
    const applicationName = checkString(options.applicationName, where, "applicationName") ?? "pglock";
    const fencingTable = checkTableName(options.fencingTable, where, "fencingTable") ?? "pglock_fencing";
    const leaseTable =
      options.leaseTable === undefined ? "pglock_leases" : checkLeaseTable(options.leaseTable, where, "leaseTable");
    const driver = driverFor(pool, where, { allowClient: false });
    const maxSessions = sessionCap(askedSessions, driver.sharedPoolMax);
    const idleMs = checkMs(options.idleMs, where, "idleMs") ?? driver.idleMs;
    const deadlockTimeoutMs =
      checkMs(options.deadlockTimeoutMs, where, "deadlockTimeoutMs") ?? DEFAULT_DEADLOCK_TIMEOUT_MS;
    const reentrant = checkBoolean(options.reentrant, where, "reentrant") ?? false;
    const closing = sharedController();
    const backend = new AdvisoryBackend(
      {
        driver,
        maxSessions,
        idleMs,
        keepaliveMs,
        probeTimeoutMs,
        serverSettings,
        applicationName: applicationNameOf(newOwner("locker", applicationName)),
        fencingTable,
        leaseTable,
        deadlockTimeoutMs,
      },
      closing.signal,
    );
    return new Locker(backend, closing, reentrant);
  }

  /** Use {@link createLocker}. */
  private constructor(backend: AdvisoryBackend, closing: AbortController, reentrant: boolean) {
    super(backend, closing, reentrant);
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
