/**
 * What a lease Locker needs from a database: run one statement, get its rows. Any connection will
 * do, a different one for every statement: a `pg.Pool`, a postgres.js `sql`, a Bun `SQL`, or a
 * query function such as an HTTP driver's (Neon's `sql.query`, say), `(text, params) => rows`.
 */
import { InvalidArgumentError } from "../errors.js";
import { describe } from "../key.js";
import { serverError } from "../server-errors.js";
import { databaseOf } from "../session/drivers.js";
import { guardHandovers, type PgPool } from "../session/pg.js";

type Rows = readonly Record<string, unknown>[];

/**
 * A function that runs one parameterized statement (`$1`, `$2`, ...) and resolves with its rows, or
 * with an object whose `rows` are (as `pg`'s `query` does). A rejection with a `code` (SQLSTATE) is a
 * database error; one without is taken as a connection failure.
 */
export type QueryFunction = (text: string, params: unknown[]) => PromiseLike<Rows | QueryResult>;

/** What `pg`'s `query` resolves with: an object whose `rows` are the rows. */
export interface QueryResult {
  /** The statement's rows, as objects keyed by column name. */
  rows: Rows;
}

/** One statement on whatever connection the database handle gives; rejects with a typed pglock error. */
export type LeaseQuery = (text: string, params: unknown[]) => Promise<Rows>;

export function leaseQueryFor(db: unknown, where: string): LeaseQuery {
  return typed(rawQueryFor(db, where));
}

function rawQueryFor(db: unknown, where: string): QueryFunction {
  const database = databaseOf(db);
  switch (database.kind) {
    case "pg-pool": {
      if (typeof (database.db as { query?: unknown }).query !== "function") break;
      // The pool's own checkouts get the hand-over guard too (session/pg.ts): a FATAL that arrives as a
      // client is handed over must fail that query, not crash the process.
      guardHandovers(database.db);
      const pool = database.db as PgPool & { query(text: string, values: unknown[]): Promise<{ rows: Rows }> };
      return (text, params) => pool.query(text, params);
    }
    case "postgres-js": {
      // Unnamed statements: nothing to go stale when a transaction pooler moves the connection.
      const sql = database.db;
      return (text, params) => sql.unsafe(text, params, { prepare: false });
    }
    case "bun-sql": {
      const sql = database.db;
      return (text, params) => sql.unsafe(text, params);
    }
    case "function":
    case "transaction":
      return database.db as unknown as QueryFunction;
  }
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

/** A lease statement's error as pglock's (server-errors.ts). */
export function leaseError(error: unknown): Error {
  return serverError(error, "a lease statement");
}
