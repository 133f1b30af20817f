/**
 * `revokeLock`: an operator frees one key safely (`pglock release`, issue #28). Terminating the
 * holder's backend by hand also drops every other lock of that session; this asks the holder first.
 */
import type { LockDatabase } from "../database.js";
import { InvalidArgumentError } from "../errors.js";
import type { SessionOwner } from "../identity.js";
import { type LockKey, type LockKeyInput, lockKey } from "../key.js";
import { readLocks } from "../locks.js";
import { sqlState } from "../server-errors.js";
import { driverFor } from "../session/drivers.js";
import { Session } from "../session/session.js";
import { sleep } from "../signals.js";
import * as sql from "../sql/advisory.js";
import { checkLeaseTable, leaseStatements } from "../sql/lease.js";
import { revoke } from "../sql/notify.js";
import { checkMs, checkSignal, optionsObject } from "../validate.js";

/** Options of {@link revokeLock}. */
export interface RevokeOptions {
  /** How long a session holder has to let go before `force` ends its session, in ms (default 5000). */
  graceMs?: number;
  /**
   * End the session of a holder that did not let go within `graceMs` (a process that is not a pglock
   * Locker, or that is frozen). Every other lock of that session is freed with it: the result lists them.
   */
  force?: boolean;
  /** The lease table whose entry for the key is deleted too (default `"pglock_leases"`). */
  leaseTable?: string;
  /** Aborting it stops waiting for the holders (nothing already done is undone). */
  signal?: AbortSignal;
}

/** A session that held the key and did not let go within the grace period. */
export interface StuckHolder {
  /** Its backend pid. */
  pid: number;
  /** Its application_name. */
  applicationName: string | null;
  /** Whose session it is (host, process id, Locker), when pglock opened it; null otherwise. */
  owner: SessionOwner | null;
  /** The other advisory locks that session holds: freed with it if it is ended. */
  alsoHolds: LockKey[];
  /** Whether `force` ended the session. */
  ended: boolean;
}

/** What {@link revokeLock} did. */
export interface RevokeResult {
  /** The key. */
  key: LockKey;
  /** Live holders of the key's lease (and a run's `atLeastMs` record), deleted at once. */
  leasesRevoked: number;
  /** Backend pids of the sessions that held the key and let go when asked. */
  released: number[];
  /** Sessions that did not let go in time. */
  stuck: StuckHolder[];
  /** Whether the key is free now (no session and no lease holds it). */
  free: boolean;
}

const DEFAULT_GRACE_MS = 5_000;
const LOOK_EVERY_MS = 50;

/**
 * Frees one key. A lease's holders are deleted at once (each is told at its next renewal). A session
 * lock's holder is asked (NOTIFY): a pglock Locker aborts that handle's `signal` with `RevokedError`
 * and releases the key, and keeps its other locks. A holder that does not let go within `graceMs` is
 * reported, and with `force` its session is ended.
 *
 * @example
 * const result = await revokeLock(pool, "nightly-report", { graceMs: 2_000 });
 * if (!result.free) console.log("still held by", result.stuck.map((holder) => holder.pid));
 */
export async function revokeLock(
  db: LockDatabase,
  key: LockKeyInput,
  options: RevokeOptions = {},
): Promise<RevokeResult> {
  optionsObject(options, "revokeLock", ["graceMs", "force", "leaseTable", "signal"]);
  const target = lockKey(key);
  const graceMs = checkMs(options.graceMs, "revokeLock", "graceMs") ?? DEFAULT_GRACE_MS;
  if (options.force !== undefined && typeof options.force !== "boolean") {
    throw new InvalidArgumentError(`revokeLock: options.force must be a boolean, got ${String(options.force)}`);
  }
  const table = checkLeaseTable(options.leaseTable ?? "pglock_leases", "revokeLock", "options.leaseTable");
  const signal = checkSignal(options.signal, "revokeLock");
  const driver = driverFor(db, "revokeLock", { allowClient: true });
  const session = await Session.open(driver);
  const query = (statement: sql.Statement) => session.query(statement);
  try {
    let leasesRevoked = 0;
    try {
      const rows = await query({ text: leaseStatements(table).revoke, values: [target.identity] });
      leasesRevoked = Number(rows[0]?.revoked ?? 0);
    } catch (error) {
      // No lease table: nobody ever took a lease or ran with atLeastMs here.
      if (sqlState(error) !== "42P01" && sqlState((error as Error).cause) !== "42P01") throw error;
    }
    const holders = async () => (await readLocks(query, target)).filter((lock) => lock.granted).map((lock) => lock.pid);
    const asked = [...new Set(await holders())];
    for (const pid of asked) await query(revoke(pid, target.identity));
    let still = asked;
    for (const deadline = performance.now() + graceMs; still.length > 0 && performance.now() < deadline; ) {
      await sleep(LOOK_EVERY_MS, signal);
      const now = new Set(await holders());
      still = still.filter((pid) => now.has(pid));
    }
    const stuck: StuckHolder[] = [];
    if (still.length > 0) {
      const all = await readLocks(query);
      for (const pid of still) {
        const mine = all.filter((lock) => lock.pid === pid && lock.granted);
        const alsoHolds = mine.filter((lock) => lock.key.identity !== target.identity).map((lock) => lock.key);
        let ended = false;
        if (options.force) {
          const [row] = await query(sql.terminateHolder(pid, target));
          ended = row?.ended === true;
        }
        stuck.push({
          pid,
          applicationName: mine[0]?.applicationName ?? null,
          owner: mine[0]?.owner ?? null,
          alsoHolds,
          ended,
        });
      }
    }
    // A terminated backend lets go of its locks as it exits: look until it has, briefly.
    let free = (await holders()).length === 0;
    for (let tries = 0; !free && stuck.some((holder) => holder.ended) && tries < 40; tries++) {
      await sleep(LOOK_EVERY_MS, signal);
      free = (await holders()).length === 0;
    }
    return {
      key: target,
      leasesRevoked,
      released: asked.filter((pid) => !still.includes(pid)),
      stuck,
      free,
    };
  } finally {
    await session.release();
  }
}
