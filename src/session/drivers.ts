/** Which driver a caller's database handle belongs to: node-postgres, postgres.js or Bun's SQL. */
import { InvalidArgumentError } from "../errors.js";
import { describe } from "../key.js";
import { bunSqlDriver, isBunSql } from "./bun-sql.js";
import type { Driver } from "./driver.js";
import { isPgClient, isPgPool, pgDriver } from "./pg.js";
import { isPostgresJs, postgresJsDriver } from "./postgres-js.js";

/**
 * A driver for `db`: a `pg.Pool`, a postgres.js `sql` instance, a Bun `SQL`, or (where `allowClient`) a
 * connected `pg.Client` the caller owns. Anything else is an InvalidArgumentError naming what is accepted.
 */
export function driverFor(db: unknown, where: string, options: { allowClient: boolean }): Driver {
  if (isPgPool(db) || (options.allowClient && isPgClient(db))) return pgDriver(db, where);
  if (isPostgresJs(db)) return postgresJsDriver(db);
  if (isBunSql(db)) return bunSqlDriver(db);
  const accepted = options.allowClient
    ? "a pg.Pool, a connected pg.Client, a postgres.js sql or a Bun SQL"
    : "a pg.Pool, a postgres.js sql or a Bun SQL";
  throw new InvalidArgumentError(`${where}: expected ${accepted}, got ${describe(db)}`);
}
