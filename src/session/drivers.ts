/**
 * Which driver a caller's database handle belongs to: node-postgres, postgres.js or Bun's SQL. The one
 * place that tells them apart; every entry point (Lockers, seed Locks, withXactLock, leases) asks it.
 */
import { InvalidArgumentError } from "../errors.js";
import { describe } from "../key.js";
import { type BunSql, bunSqlDriver, isBunSql } from "./bun-sql.js";
import type { Driver } from "./driver.js";
import { isPgClient, isPgPool, type PgClient, type PgPool, pgDriver } from "./pg.js";
import { isPostgresJs, type PostgresJsSql, postgresJsDriver } from "./postgres-js.js";

/** The `sql` of a postgres.js or Bun `sql.begin` callback: it has `savepoint`, and neither `begin` nor `release`. */
export interface SqlTransaction {
  unsafe(text: string, values?: unknown[], options?: { prepare?: boolean }): PromiseLike<Record<string, unknown>[]>;
  savepoint<T>(fn: (sql: SqlTransaction) => Promise<T>): Promise<T>;
}

/** A database handle, told apart. */
export type Database =
  | { kind: "pg-pool"; db: PgPool }
  | { kind: "pg-client"; db: PgClient }
  | { kind: "postgres-js"; db: PostgresJsSql }
  | { kind: "bun-sql"; db: BunSql }
  | { kind: "transaction"; db: SqlTransaction }
  | { kind: "function"; db: (...args: never[]) => unknown }
  | { kind: "other"; db: unknown };

export function databaseOf(db: unknown): Database {
  if (isPgPool(db)) return { kind: "pg-pool", db };
  if (isPgClient(db)) return { kind: "pg-client", db };
  if (isPostgresJs(db)) return { kind: "postgres-js", db };
  if (isBunSql(db)) return { kind: "bun-sql", db };
  if (isSqlTransaction(db)) return { kind: "transaction", db };
  if (typeof db === "function") return { kind: "function", db: db as (...args: never[]) => unknown };
  return { kind: "other", db };
}

function isSqlTransaction(value: unknown): value is SqlTransaction {
  const v = value as Partial<SqlTransaction>;
  return typeof value === "function" && typeof v.unsafe === "function" && typeof v.savepoint === "function";
}

/**
 * A driver for `db`: a `pg.Pool`, a postgres.js `sql` instance, a Bun `SQL`, or (where `allowClient`) a
 * connected `pg.Client` the caller owns. Anything else is an InvalidArgumentError naming what is accepted.
 */
export function driverFor(db: unknown, where: string, options: { allowClient: boolean }): Driver {
  const database = databaseOf(db);
  switch (database.kind) {
    case "pg-pool":
      return pgDriver(database.db, where);
    case "pg-client":
      if (options.allowClient) return pgDriver(database.db, where);
      break;
    case "postgres-js":
      return postgresJsDriver(database.db);
    case "bun-sql":
      return bunSqlDriver(database.db);
  }
  const accepted = options.allowClient
    ? "a pg.Pool, a connected pg.Client, a postgres.js sql or a Bun SQL"
    : "a pg.Pool, a postgres.js sql or a Bun SQL";
  throw new InvalidArgumentError(`${where}: expected ${accepted}, got ${describe(db)}`);
}
