/**
 * `inspectLocks`: who holds and who awaits which advisory lock (locks.ts).
 */
import type { LockDatabase } from "../database.js";
import { type LockKeyInput, lockKey } from "../key.js";
import { type AdvisoryLockInfo, readLocksOn } from "../locks.js";
import { driverFor } from "../session/drivers.js";
import { optionsObject } from "../validate.js";

export type { AdvisoryLockInfo } from "../locks.js";

/** Options of `inspectLocks`. */
export interface InspectOptions {
  /** Only this key. */
  key?: LockKeyInput;
}

/**
 * The advisory locks of the current database, held and awaited: granted first, then waiters in the
 * order they began to wait. `db` is a `pg.Pool`, a connected `pg.Client`, a postgres.js `sql` or a
 * Bun `SQL`. PostgreSQL records when a wait began, not when a lock was granted: how long a lock has
 * been held is not known.
 */
export async function inspectLocks(db: LockDatabase, options: InspectOptions = {}): Promise<AdvisoryLockInfo[]> {
  optionsObject(options, "inspectLocks", ["key"]);
  const driver = driverFor(db, "inspectLocks", { allowClient: true });
  const key = options.key === undefined ? undefined : lockKey(options.key);
  return readLocksOn(driver, key);
}
