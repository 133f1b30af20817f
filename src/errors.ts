/**
 * Every error pglock throws carries a stable `code` and is `instanceof PglockError`, including the
 * argument errors, which are `TypeError`s (a bad argument is a type error in JavaScript's own terms).
 * JavaScript has no multiple inheritance, so membership is a brand checked by `Symbol.hasInstance`.
 */

const brand = Symbol.for("pglock.error");

/** Stable machine-readable codes, one per error class. */
export type PglockErrorCode =
  | "ERR_PGLOCK_INVALID_ARGUMENT"
  | "ERR_PGLOCK_INVALID_KEY"
  | "ERR_PGLOCK_CLOSED"
  | "ERR_PGLOCK_CONNECTION"
  | "ERR_PGLOCK_TIMEOUT"
  | "ERR_PGLOCK_LOST"
  | "ERR_PGLOCK_EXPIRED"
  | "ERR_PGLOCK_REVOKED"
  | "ERR_PGLOCK_DEADLOCK"
  | "ERR_PGLOCK_ALREADY_HELD"
  | "ERR_PGLOCK_LOCK_TABLE_FULL"
  | "ERR_PGLOCK_READ_ONLY_SERVER"
  | "ERR_PGLOCK_NOT_HELD"
  | "ERR_PGLOCK_DATABASE";

interface ErrorOptions {
  cause?: unknown;
}

/** Base class of every pglock error. `err instanceof PglockError` is true for all of them. */
export class PglockError extends Error {
  /** Stable across versions: branch on it rather than on the class or the message. */
  readonly code: PglockErrorCode;
  constructor(code: PglockErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
    Object.defineProperty(this, brand, { value: true });
  }
  /** `error instanceof PglockError` is true for every pglock error, the argument errors included. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: subclasses inherit this method; `this` tells which class asks.
    if (this !== PglockError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === "object" && value !== null && brand in value;
  }
}

/** A bad argument or option, detected before anything touches the database. */
export class InvalidArgumentError extends TypeError {
  /** `ERR_PGLOCK_INVALID_ARGUMENT`, or `ERR_PGLOCK_INVALID_KEY` for a key. */
  readonly code: PglockErrorCode;
  constructor(message: string, code: PglockErrorCode = "ERR_PGLOCK_INVALID_ARGUMENT") {
    super(message);
    this.code = code;
    this.name = new.target.name;
    Object.defineProperty(this, brand, { value: true });
  }
}

/** A value that cannot be a lock key; the message names the value and the rule it breaks. */
export class InvalidLockKeyError extends InvalidArgumentError {
  constructor(message: string) {
    super(message, "ERR_PGLOCK_INVALID_KEY");
  }
}

/** The Lock or Locker was closed; nothing more can be done with it. */
export class ClosedError extends PglockError {
  constructor(what: string) {
    super("ERR_PGLOCK_CLOSED", `${what} is closed`);
  }
}

/**
 * The connection to PostgreSQL failed or ended. Any lock its session held is gone: PostgreSQL
 * releases a session's advisory locks when the session ends.
 */
export class ConnectionError extends PglockError {
  constructor(message: string, options?: ErrorOptions) {
    super("ERR_PGLOCK_CONNECTION", message, options);
  }
}

/**
 * A wait for a lock did not succeed in time: pglock's `timeout` elapsed, or the server ended the
 * wait (its `lock_timeout` or `statement_timeout`). The lock is not held.
 */
export class LockTimeoutError extends PglockError {
  /** pglock's timeout in ms, or undefined when the server's own timeout ended the wait. */
  readonly timeoutMs: number | undefined;
  /** The key (or keys, for acquireAll) that was not acquired, as text. */
  readonly key: string;
  constructor(key: string, timeoutMs: number | undefined, options?: ErrorOptions) {
    super(
      "ERR_PGLOCK_TIMEOUT",
      timeoutMs === undefined
        ? `the server ended the wait for lock ${key} (lock_timeout, statement_timeout or a cancel)`
        : `lock ${key} was not acquired within ${timeoutMs} ms`,
      options,
    );
    this.timeoutMs = timeoutMs;
    this.key = key;
  }
}

/** A lock that was held is no longer held (its session ended); the critical section is unprotected. */
export class LockLostError extends PglockError {
  constructor(message: string, options?: ErrorOptions, code: PglockErrorCode = "ERR_PGLOCK_LOST") {
    super(code, message, options);
  }
}

/**
 * The holder ran past its `atMostMs`: the lock was taken from it and freed for others. A
 * `LockLostError` (code `ERR_PGLOCK_EXPIRED`): nothing the lock guards may be done after it.
 */
export class LockExpiredError extends LockLostError {
  /** The key that was held. */
  readonly key: string;
  /** The `atMostMs` it ran past. */
  readonly atMostMs: number;
  constructor(key: string, atMostMs: number) {
    super(
      `lock ${key} was held for its atMostMs (${atMostMs} ms) and freed for others: stop the work it guards`,
      undefined,
      "ERR_PGLOCK_EXPIRED",
    );
    this.key = key;
    this.atMostMs = atMostMs;
  }
}

/**
 * An operator freed the lock (`pglock release`, `revokeLock`): the holder's signal aborts with it, and
 * its Locker released the key. A `LockLostError` (code `ERR_PGLOCK_REVOKED`): stop the work it guards.
 */
export class RevokedError extends LockLostError {
  /** The key that was held. */
  readonly key: string;
  constructor(key: string) {
    super(
      `lock ${key} was revoked by an operator (pglock release) and freed: stop the work it guards`,
      undefined,
      "ERR_PGLOCK_REVOKED",
    );
    this.key = key;
  }
}

/** @internal The loss of a lock because the session holding it ended with `reason` (Lock and Locker alike). */
export function sessionEndedError(key: { toString(): string }, reason: unknown): LockLostError {
  const detail = reason instanceof Error ? `: ${reason.message}` : "";
  return new LockLostError(`lock ${key} was lost, its session ended${detail}`, { cause: reason });
}

/**
 * A deadlock, and this wait was chosen to fail: PostgreSQL detected it among its sessions (SQLSTATE
 * 40P01), or pglock detected a cycle of tasks, each known to hold what the one before it waits for
 * (then `cycle` says who waited for what). The locks the caller already holds stay held: release
 * them so the other side can go on.
 */
export class DeadlockError extends PglockError {
  /** The cycle pglock found, or undefined when PostgreSQL found it. */
  readonly cycle: string | undefined;
  constructor(key: string, options?: ErrorOptions & { cycle?: string }) {
    super(
      "ERR_PGLOCK_DEADLOCK",
      `deadlock detected while waiting for lock ${key}${options?.cycle ? ` (${options.cycle})` : ""}: take locks in one consistent order`,
      options,
    );
    this.cycle = options?.cycle;
  }
}

/**
 * The calling task already holds this key on this Locker (it is inside `withLock` for it, or passed
 * its handle in `holding`), so waiting for it would wait for itself. Thrown at once, before anything
 * reaches the database; `reentrant: true` makes such a call one more level of the held lock instead.
 */
export class AlreadyHeldError extends PglockError {
  /** The key the task holds already. */
  readonly key: string;
  constructor(key: string, message: string) {
    super("ERR_PGLOCK_ALREADY_HELD", message);
    this.key = key;
  }
}

/** The server's shared lock table is full (SQLSTATE 53200). */
export class LockTableFullError extends PglockError {
  constructor(options?: ErrorOptions) {
    super(
      "ERR_PGLOCK_LOCK_TABLE_FULL",
      "PostgreSQL's lock table is full (out of shared memory, SQLSTATE 53200): hold fewer locks at once " +
        "or raise max_locks_per_transaction on the server (it needs a restart)",
      options,
    );
  }
}

/** The server is a hot standby: its advisory locks exclude nobody on the primary, so pglock refuses them. */
export class ReadOnlyServerError extends PglockError {
  /**
   * `standby`: the server is in recovery. `read-only`: a primary that refuses writes to this session
   * (`default_transaction_read_only`, SQLSTATE 25006), which leases and fencing tokens need.
   */
  constructor(why: "standby" | "read-only" = "standby", options?: ErrorOptions) {
    super(
      "ERR_PGLOCK_READ_ONLY_SERVER",
      why === "standby"
        ? "the server is in recovery (a hot standby): advisory locks taken there exclude nobody on the " +
            "primary, so pglock refuses to lock; connect to the primary"
        : "the server refused a write because this session is read-only (default_transaction_read_only is on, " +
            "for the role, the database or the server): leases and fencing tokens write a row; " +
            "let pglock's role write (ALTER ROLE … SET default_transaction_read_only = off)",
      options,
    );
  }
}

/**
 * PostgreSQL says this session does not hold a lock pglock believed it held. The usual cause is a
 * pooler in transaction mode (PgBouncer `pool_mode=transaction`) moving the client to another
 * server session; the lock was never protecting anything there.
 */
export class LockNotHeldError extends PglockError {
  constructor(key: string, why?: string) {
    super(
      "ERR_PGLOCK_NOT_HELD",
      why === undefined
        ? `PostgreSQL says this session does not hold lock ${key}, which pglock believed it held: the ` +
            "session changed under the lock (a pooler in transaction mode?) or the lock was released " +
            "behind pglock's back; use a direct connection or session pooling"
        : `lock ${key} was not held when released: ${why}`,
    );
  }
}

/** PostgreSQL answered a lock statement with an error pglock has no better name for; `cause` has it. */
export class DatabaseError extends PglockError {
  constructor(message: string, options?: ErrorOptions) {
    super("ERR_PGLOCK_DATABASE", message, options);
  }
}
