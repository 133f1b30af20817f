/**
 * Transaction-level locks (`pg_advisory_xact_lock`) inside a transaction the caller owns: released
 * by PostgreSQL at commit or rollback, so they are safe through PgBouncer in transaction pooling.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
 */
import { lockError } from "../acquire.js";
import type { TransactionDatabase } from "../database.js";
import { InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKey, type LockKeyInput, type LockMode, lockKey } from "../key.js";
import { sqlState } from "../server-errors.js";
import { databaseOf, type SqlTransaction } from "../session/drivers.js";
import { pgDriver } from "../session/pg.js";
import { Session } from "../session/session.js";
import { linkSignals, timeoutSignal } from "../signals.js";
import * as sql from "../sql/advisory.js";
import { checkBoolean, checkMs, checkSignal, optionsObject } from "../validate.js";

/** Options of `withXactLock`. */
export interface XactLockOptions {
  /**
   * Take the lock shared.
   * @defaultValue false
   */
  shared?: boolean;
  /** Give up after this many ms with `LockTimeoutError`; the caller's transaction goes on. */
  timeout?: number;
  /** Aborting gives up with `signal.reason`; the caller's transaction goes on. */
  signal?: AbortSignal;
}

const SAVEPOINT = "pglock_xact_lock";

/**
 * Takes a transaction-level lock on `client`, which must be inside a transaction, then runs `fn`.
 * The lock is held until the caller's transaction ends. `client` is a `pg` client after BEGIN, or the
 * `sql` a postgres.js or Bun `sql.begin(async (sql) => …)` callback receives (Bun's transaction has
 * the same `unsafe` and `savepoint`, and is handled the same way).
 *
 * With `pg`, the wait runs in a savepoint: a timeout or abort cancels it and rolls back to the
 * savepoint, which also undoes a grant that won the race, so the caller's transaction is neither
 * aborted nor left holding the lock. With postgres.js, the wait runs in `sql.savepoint()` with the
 * server's lock_timeout, so a `timeout` works there and an abort `signal` is refused: postgres.js cannot
 * cancel one statement of a transaction without failing the transaction.
 *
 * @example
 * await client.query("BEGIN");
 * await withXactLock(client, "invoice:42", async () => { await client.query("UPDATE …"); }, { timeout: 1000 });
 * await client.query("COMMIT"); // releases the lock
 */
export async function withXactLock<T>(
  client: TransactionDatabase,
  key: LockKeyInput,
  fn: () => Promise<T> | T,
  options: XactLockOptions = {},
): Promise<T> {
  optionsObject(options, "withXactLock", ["shared", "timeout", "signal"]);
  const normalized = lockKey(key);
  if (typeof fn !== "function")
    throw new InvalidArgumentError(`withXactLock: fn must be a function, got ${describe(fn)}`);
  const mode = (checkBoolean(options.shared, "withXactLock", "shared") ?? false) ? "shared" : "exclusive";
  const timeout = checkMs(options.timeout, "withXactLock", "timeout");
  const signal = checkSignal(options.signal, "withXactLock");
  const database = databaseOf(client);
  if (database.kind === "postgres-js" || database.kind === "bun-sql") {
    throw new InvalidArgumentError(
      "withXactLock: pass the transaction's sql (the argument of sql.begin's callback), not the sql instance",
    );
  }
  if (database.kind === "transaction") {
    if (signal) {
      throw new InvalidArgumentError(
        "withXactLock: options.signal is not supported on a postgres.js or Bun transaction (use options.timeout)",
      );
    }
    await inSqlTransaction(database.db, normalized, mode, timeout);
    return fn();
  }
  signal?.throwIfAborted();
  if (database.kind === "pg-pool") {
    // A pool's query runs each statement on any of its connections: there is no one transaction.
    throw new InvalidArgumentError(
      "withXactLock: got a pg.Pool; pass the client that runs the transaction: const client = await pool.connect(); " +
        'await client.query("BEGIN"); await withXactLock(client, key, fn)',
    );
  }
  const session = await Session.open(pgDriver(client, "withXactLock"));
  try {
    await inPgTransaction(session, normalized, mode, timeout, signal);
  } finally {
    await session.release();
  }
  return fn();
}

async function inPgTransaction(
  session: Session,
  key: LockKey,
  mode: LockMode,
  timeout: number | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  // timeout 0 is a try-lock, which needs no deadline.
  const deadline =
    timeout === undefined || timeout === 0
      ? undefined
      : timeoutSignal(timeout, () => new LockTimeoutError(key.toString(), timeout));
  const linked = linkSignals(signal, deadline?.signal);
  try {
    try {
      await session.query(sql.savepoint(SAVEPOINT));
    } catch (error) {
      if (sqlState(error) === "25P01") {
        throw new InvalidArgumentError("withXactLock: the client is not in a transaction: call BEGIN first");
      }
      throw lockError(error, key);
    }
    const statement = timeout === 0 ? sql.tryXactLock(key, mode) : sql.xactLock(key, mode);
    const outcome = await session.run(statement, {
      signal: linked.signal,
      cancelOnAbort: true,
      waits: true,
    });
    const granted = outcome.status === "done" && outcome.rows[0]?.ok === true;
    if (granted && !linked.signal.aborted) {
      await session.query(sql.releaseSavepoint(SAVEPOINT));
      return;
    }
    // Rolling back to the savepoint ends the failed wait, and undoes a grant that raced the abort.
    if (outcome.status !== "skipped") await session.query(sql.rollbackToSavepoint(SAVEPOINT));
    if (outcome.status === "done" && !granted) throw new LockTimeoutError(key.toString(), 0);
    if (linked.signal.aborted) throw linked.signal.reason;
    const state = outcome.status === "failed" ? sqlState(outcome.error) : undefined;
    if (state === "55P03" || state === "57014") throw new LockTimeoutError(key.toString(), undefined);
    throw lockError(outcome.status === "failed" ? outcome.error : undefined, key);
  } finally {
    linked.dispose();
    deadline?.dispose();
  }
}

/**
 * In a postgres.js transaction every failed statement fails the whole `sql.begin` (postgres.js
 * records it and rolls back at the end), unless it ran inside `sql.savepoint()`. So the wait runs
 * there, bounded by the server's lock_timeout rather than a cancel request: the transaction's `sql`
 * does not expose which server it is connected to, and postgres.js's own query.cancel() can crash
 * the process when its cancel connection fails (see session/postgres-js.ts). A lock_timeout error
 * rolls back to the savepoint, which cannot have granted the lock.
 */
async function inSqlTransaction(
  tx: SqlTransaction,
  key: LockKey,
  mode: LockMode,
  timeout: number | undefined,
): Promise<void> {
  const run = async (target: SqlTransaction, statement: sql.Statement) =>
    await target.unsafe(statement.text, [...statement.values], { prepare: false });
  if (timeout === 0) {
    const [row] = await run(tx, sql.tryXactLock(key, mode)).catch((error: unknown) => {
      throw lockError(error, key);
    });
    if (row?.ok !== true) throw new LockTimeoutError(key.toString(), 0);
    return;
  }
  let previous: string | undefined;
  try {
    await tx.savepoint(async (savepoint) => {
      // lock_timeout takes whole milliseconds; 0 would mean "wait forever".
      if (timeout !== undefined) {
        const [row] = await run(savepoint, sql.setLocalLockTimeout(`${Math.max(1, Math.ceil(timeout))}ms`));
        previous = String(row?.previous);
      }
      await run(savepoint, sql.xactLock(key, mode));
    });
  } catch (error) {
    if (sqlState(error) === "55P03") throw new LockTimeoutError(key.toString(), timeout);
    if (sqlState(error) === "25P01") {
      throw new InvalidArgumentError("withXactLock: the postgres.js sql is not in a transaction");
    }
    throw lockError(error, key);
  }
  // The savepoint was released, so its SET LOCAL still holds: put the caller's lock_timeout back.
  if (previous !== undefined) await run(tx, sql.setLocalLockTimeout(previous));
}
