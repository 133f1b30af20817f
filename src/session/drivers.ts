/** Which driver a caller's database handle belongs to (node-postgres, for now). */
import { InvalidArgumentError } from "../errors.js";
import { describe } from "../key.js";
import type { Driver } from "./driver.js";
import { isPgClient, isPgPool, pgDriver } from "./pg.js";

/**
 * A driver for `db`: a `pg.Pool`, or (where `allowClient`) a connected `pg.Client` the caller owns.
 * Anything else is an InvalidArgumentError naming what is accepted.
 */
export function driverFor(db: unknown, where: string, options: { allowClient: boolean }): Driver {
  if (isPgPool(db) || (options.allowClient && isPgClient(db))) return pgDriver(db, where);
  const accepted = options.allowClient ? "a pg.Pool or a connected pg.Client" : "a pg.Pool";
  throw new InvalidArgumentError(`${where}: expected ${accepted}, got ${describe(db)}`);
}
