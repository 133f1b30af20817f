/**
 * Transaction-level locks (`pg_advisory_xact_lock`) inside a transaction the caller owns: released
 * by PostgreSQL at commit or rollback, so they are safe through PgBouncer in transaction pooling.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
 */
import { lockError } from "../acquire.js";
import { InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKeyInput, lockKey } from "../key.js";
import { sqlState } from "../session/driver.js";
import { pgDriver } from "../session/pg.js";
import { Session } from "../session/session.js";
import { linkSignals, timeoutSignal } from "../signals.js";
import * as sql from "../sql.js";
import { checkBoolean, checkMs, checkSignal, optionsObject } from "../validate.js";

export interface XactLockOptions {
  shared?: boolean;
  /** Give up after this many ms with `LockTimeoutError`; the caller's transaction goes on. */
  timeout?: number;
  /** Aborting gives up with `signal.reason`; the caller's transaction goes on. */
  signal?: AbortSignal;
}

const SAVEPOINT = "pglock_xact_lock";

/**
 * Takes a transaction-level lock on `client`, which must be inside a transaction (after BEGIN),
 * then runs `fn`. The lock is held until the caller's transaction ends. The wait runs in a savepoint:
 * a timeout or abort cancels it and rolls back to the savepoint, which also undoes a grant that won
 * the race, so the caller's transaction is neither aborted nor left holding the lock.
 *
 * @example
 * await client.query("BEGIN");
 * await withXactLock(client, ["invoice", 42], async () => { await client.query("UPDATE …"); }, { timeout: 1000 });
 * await client.query("COMMIT"); // releases the lock
 */
export async function withXactLock<T>(
  client: unknown,
  key: LockKeyInput,
  fn: () => Promise<T> | T,
  options: XactLockOptions = {},
): Promise<T> {
  optionsObject(options, "withXactLock");
  const normalized = lockKey(key);
  if (typeof fn !== "function")
    throw new InvalidArgumentError(`withXactLock: fn must be a function, got ${describe(fn)}`);
  const shared = checkBoolean(options.shared, "withXactLock", "shared") ?? false;
  const timeout = checkMs(options.timeout, "withXactLock", "timeout");
  const signal = checkSignal(options.signal, "withXactLock");
  signal?.throwIfAborted();
  const session = await Session.open(pgDriver(client, "withXactLock"));
  const deadline =
    timeout === undefined
      ? undefined
      : timeoutSignal(timeout, () => new LockTimeoutError(normalized.toString(), timeout));
  const linked = linkSignals(signal, deadline?.signal);
  try {
    try {
      await session.query(sql.savepoint(SAVEPOINT));
    } catch (error) {
      if (sqlState(error) === "25P01") {
        throw new InvalidArgumentError("withXactLock: the client is not in a transaction: call BEGIN first");
      }
      throw lockError(error, normalized);
    }
    const outcome = await session.run(sql.xactLock(normalized, shared ? "shared" : "exclusive"), {
      signal: linked.signal,
      cancelOnAbort: true,
      waits: true,
    });
    if (outcome.status === "done" && !linked.signal.aborted) {
      await session.query(sql.releaseSavepoint(SAVEPOINT));
    } else {
      // Rolling back to the savepoint ends the failed wait, and undoes a grant that raced the abort.
      if (outcome.status !== "skipped") await session.query(sql.rollbackToSavepoint(SAVEPOINT));
      if (linked.signal.aborted) throw linked.signal.reason;
      const state = outcome.status === "failed" ? sqlState(outcome.error) : undefined;
      if (state === "55P03" || state === "57014") throw new LockTimeoutError(normalized.toString(), undefined);
      throw lockError(outcome.status === "failed" ? outcome.error : undefined, normalized);
    }
  } finally {
    linked.dispose();
    deadline?.dispose();
    await session.release();
  }
  return fn();
}
