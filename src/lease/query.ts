/**
 * What a lease Locker needs from a database: run one statement, get its rows. Any connection will
 * do, a different one for every statement: a `pg.Pool`, a postgres.js `sql`, a Bun `SQL`, or a
 * query function such as an HTTP driver's (Neon's `sql.query`, say), `(text, params) => rows`.
 */
import { ConnectionError, DatabaseError, InvalidArgumentError, ReadOnlyServerError } from "../errors.js";
import { describe } from "../key.js";
import { type BunSql, isBunSql } from "../session/bun-sql.js";
import { endsSession, sqlState } from "../session/driver.js";
import { guardHandovers, isPgPool, type PgPool } from "../session/pg.js";
import { isPostgresJs, type PostgresJsSql } from "../session/postgres-js.js";

type Rows = readonly Record<string, unknown>[];

/**
 * A function that runs one parameterized statement (`$1`, `$2`, ...) and resolves with its rows, or
 * with an object whose `rows` are (as `pg`'s `query` does). A rejection with a `code` (SQLSTATE) is a
 * database error; one without is taken as a connection failure.
 */
export type QueryFunction = (text: string, params: unknown[]) => PromiseLike<Rows | { rows: Rows }>;

/** One statement on whatever connection the database handle gives; rejects with a typed pglock error. */
export type LeaseQuery = (text: string, params: unknown[]) => Promise<Rows>;

export function leaseQueryFor(db: unknown, where: string): LeaseQuery {
  return typed(rawQueryFor(db, where));
}

function rawQueryFor(db: unknown, where: string): QueryFunction {
  if (isPgPool(db) && typeof (db as { query?: unknown }).query === "function") {
    // The pool's own checkouts get the hand-over guard too (session/pg.ts): a FATAL that arrives as a
    // client is handed over must fail that query, not crash the process.
    guardHandovers(db);
    const pool = db as PgPool & { query(text: string, values: unknown[]): Promise<{ rows: Rows }> };
    return (text, params) => pool.query(text, params);
  }
  // Unnamed statements: nothing to go stale when a transaction pooler moves the connection.
  if (isPostgresJs(db)) return (text, params) => (db as PostgresJsSql).unsafe(text, params, { prepare: false });
  if (isBunSql(db)) return (text, params) => (db as BunSql).unsafe(text, params);
  if (typeof db === "function") return db as QueryFunction;
  throw new InvalidArgumentError(
    `${where}: expected a pg.Pool, a postgres.js sql, a Bun SQL or a query function (text, params) => rows, got ${describe(db)}`,
  );
}

function typed(query: QueryFunction): LeaseQuery {
  return async (text, params) => {
    let result: Rows | { rows: Rows };
    try {
      result = await query(text, params);
    } catch (error) {
      throw leaseError(error);
    }
    if (Array.isArray(result)) return result;
    const rows = (result as { rows?: unknown } | null)?.rows;
    if (Array.isArray(rows)) return rows;
    throw new InvalidArgumentError(
      `createLeaseLocker: the query function must resolve with rows (an array) or { rows }, got ${describe(result)}`,
    );
  };
}

/** A driver's error as pglock's: the SQLSTATE decides, and the driver's error stays the `cause`. */
export function leaseError(error: unknown): Error {
  const state = sqlState(error);
  const message = error instanceof Error ? error.message : String(error);
  if (state === "25006") return new ReadOnlyServerError("read-only", { cause: error });
  if (endsSession(error)) return new ConnectionError(`a lease statement failed: ${message}`, { cause: error });
  return new DatabaseError(`a lease statement failed (SQLSTATE ${state}): ${message}`, { cause: error });
}
