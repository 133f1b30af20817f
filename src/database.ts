/**
 * The databases pglock accepts, described by what pglock uses of them, so that pglock's declarations
 * import no driver's types (kysely's PostgresPool is the model). `createLocker("postgres://…")` does
 * not compile; at run time, anything else is refused too, with an error that says what was expected.
 */

/** A node-postgres `Pool` (`pg.Pool`). */
export interface PgPoolLike {
  /** Checks out a client (the Locker takes its sessions this way). */
  connect(): Promise<unknown>;
  /** Read with `options.max` to leave the application a connection. */
  readonly totalCount: number;
}

/** A connected node-postgres `Client` (`pg.Client`, or a client checked out of a pool). */
export interface PgClientLike {
  /** Runs a statement on this client. */
  query(...args: never[]): unknown;
  /** For the client's `error` and `end` events: a connection that ends is a lost lock. */
  on(...args: never[]): unknown;
}

/** A postgres.js `sql`, or Bun's `SQL`: a tagged-template function with `unsafe` and `begin`. */
export interface SqlTagLike {
  (...args: never[]): unknown;
  /** Runs a statement with parameters. */
  unsafe(...args: never[]): unknown;
  /** Reserves a connection (pglock holds session locks in one it keeps). */
  begin(...args: never[]): unknown;
}

/** What a Locker takes its sessions from: a `pg.Pool`, a postgres.js `sql` or a Bun `SQL`. */
export type PoolDatabase = PgPoolLike | SqlTagLike;

/** What a seed Lock or `inspectLocks` takes: a pool as a Locker's, or a connected `pg.Client` of yours. */
export type LockDatabase = PoolDatabase | PgClientLike;

/** The `sql` a postgres.js or Bun `sql.begin(async (sql) => …)` callback receives. */
export interface SqlTransactionLike {
  (...args: never[]): unknown;
  /** Runs a statement with parameters. */
  unsafe(...args: never[]): unknown;
  /** Runs a callback in a savepoint (pglock waits there, so a timeout does not fail the transaction). */
  savepoint(...args: never[]): unknown;
}

/** What `withXactLock` takes: a `pg` client in a transaction, or a postgres.js or Bun transaction's `sql`. */
export type TransactionDatabase = PgClientLike | SqlTransactionLike;
