/**
 * Taking and releasing one level of one lock on one session, in every path ending with certainty
 * about what the session holds. Used by both Lock (one dedicated session) and Locker (multiplexed).
 */
import { ConnectionError, LockNotHeldError, LockTimeoutError } from "./errors.js";
import type { LockKey, LockMode } from "./key.js";
import { serverError, sqlState } from "./server-errors.js";
import type { Session } from "./session/session.js";
import * as sql from "./sql/advisory.js";

export interface AcquireOptions {
  signal?: AbortSignal | undefined;
  /**
   * Whether the session already holds a level in this mode, read when the statement has run (the
   * session is FIFO, so nothing else ran meanwhile). Then PostgreSQL grants at once, never waits,
   * and pg_locks could not tell n levels from n + 1, so no cancel is sent.
   */
  holdsMode?: () => boolean;
  /**
   * Why the wait was cancelled other than by `signal`, if it was (a deadlock victim's DeadlockError,
   * deadlock.ts): treated as the signal's reason is.
   */
  interrupted?: () => Error | undefined;
  /** What the waiting task holds, published in the wait's text for the deadlock checks (waits.ts). */
  holds?: () => readonly { pid: number; key: LockKey }[];
}

/**
 * Waits on the server until the lock is granted. If the signal aborts, the wait is cancelled on the
 * server and this rejects with `signal.reason`, the session holding exactly what it held before: a
 * grant that won the race is released, and after a cancel error pg_locks says whether PostgreSQL
 * granted the lock anyway (it can: when the cancel is processed after another backend granted the
 * wait, PostgreSQL's LockErrorCleanup keeps the lock and the statement still fails with 57014).
 */
export async function waitForLock(session: Session, key: LockKey, mode: LockMode, options: AcquireOptions = {}) {
  const { signal } = options;
  const holdsMode = options.holdsMode ?? (() => false);
  const reason = () => (signal?.aborted ? signal.reason : options.interrupted?.());
  for (;;) {
    const sliceMs = session.waitSliceMs;
    const statement = sql.waitLock(key, mode, { sliceMs, holds: options.holds?.() });
    const outcome = await session.run(statement, { signal, cancelOnAbort: () => !holdsMode(), waits: true });
    if (outcome.status === "skipped") throw outcome.reason;
    if (outcome.status === "done") {
      const given = reason();
      if (given !== undefined) {
        await releaseLevel(session, key, mode, { first: true });
        throw given;
      }
      return;
    }
    const state = sqlState(outcome.error);
    if (state === "55P03" && sliceMs !== undefined && reason() === undefined && !holdsMode()) {
      // The slice ended (sql.waitLock). PostgreSQL can grant the lock as its lock_timeout fires,
      // and still fail the statement: pg_locks says which.
      if (await isGranted(session, key, mode)) return;
      continue;
    }
    if (state === "57014" || state === "55P03") {
      // query_canceled / lock_not_available: not proof that the lock was refused.
      if (holdsMode()) {
        await session.discard(
          new ConnectionError(
            `lock ${key}: the server ended a re-entrant lock call; the session was ended to leave no doubt`,
          ),
        );
        throw new ConnectionError(`lock ${key}: the session was ended because its lock count became uncertain`, {
          cause: outcome.error,
        });
      }
      await undoIfGranted(session, key, mode);
      const given = reason();
      if (given !== undefined) throw given;
      throw new LockTimeoutError(key.toString(), undefined, { cause: outcome.error });
    }
    throw lockError(outcome.error, key);
  }
}

/**
 * Tries once, without waiting. Resolves true when granted. If the signal aborts while the statement
 * is in flight, a grant is released and the call rejects with `signal.reason`.
 */
export async function tryLock(session: Session, key: LockKey, mode: LockMode, signal?: AbortSignal) {
  const outcome = await session.run(sql.tryLock(key, mode), { signal, batch: { op: "try", key, mode } });
  if (outcome.status === "skipped") throw outcome.reason;
  if (outcome.status === "failed") throw lockError(outcome.error, key);
  const granted = outcome.rows[0]?.ok === true;
  if (signal?.aborted) {
    if (granted) await releaseLevel(session, key, mode, { first: true });
    throw signal.reason;
  }
  return granted;
}

/**
 * Releases one level the caller knows it holds. A false from pg_advisory_unlock means the session
 * did not hold it after all: that is never ignored ({@link LockNotHeldError}).
 */
export async function releaseLevel(
  session: Session,
  key: LockKey,
  mode: LockMode,
  options: { first?: boolean; signal?: AbortSignal } = {},
) {
  const batch = options.first ? undefined : ({ op: "unlock", key, mode } as const);
  const outcome = await session.run(sql.unlock(key, mode), { ...options, batch });
  if (outcome.status === "skipped") throw outcome.reason;
  if (outcome.status === "failed") {
    // A failed release on a session that is still alive leaves doubt: end the session, which releases it.
    if (!session.isLost)
      await session.discard(new ConnectionError(`could not release lock ${key}`, { cause: outcome.error }));
    throw lockError(outcome.error, key);
  }
  if (outcome.status === "done" && outcome.rows[0]?.ok !== true) throw new LockNotHeldError(key.toString());
}

/** Releases `levels` levels in one round trip (closing a Lock). */
export async function releaseLevels(session: Session, key: LockKey, mode: LockMode, levels: number) {
  if (levels === 0) return;
  const rows = await session.query(sql.unlockLevels(key, mode, levels));
  if (rows.length !== levels || rows.some((row) => row.ok !== true)) throw new LockNotHeldError(key.toString());
}

async function undoIfGranted(session: Session, key: LockKey, mode: LockMode) {
  let granted: boolean;
  try {
    granted = await isGranted(session, key, mode);
  } catch {
    return; // the session was ended, and with it whatever it held
  }
  if (granted) await releaseLevel(session, key, mode, { first: true });
}

/** Whether pg_locks shows the lock granted to this session; a session that cannot tell is ended. */
async function isGranted(session: Session, key: LockKey, mode: LockMode): Promise<boolean> {
  const outcome = await session.run(sql.holdsLock(key, mode), { first: true });
  if (outcome.status !== "done") {
    const error = new ConnectionError(`could not learn whether lock ${key} was granted; the session was ended`);
    if (!session.isLost) await session.discard(error);
    throw error;
  }
  return outcome.rows[0]?.granted === true;
}

/** Maps a driver error from a lock statement to pglock's error classes. */
export function lockError(error: unknown, key: LockKey): Error {
  return serverError(error, `lock ${key}`, { key: key.toString() });
}
