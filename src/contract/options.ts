/** The options every Locker takes, whatever its backend. */
import type { LockHandle } from "./handle.js";

/** A group of locks taken together; see `LockGroup`. */
interface LockGroupLike {
  readonly handles: readonly LockHandle[];
}

/** What the calling task says about itself; every Locker's acquire and tryAcquire take these. */
export interface TaskOptions {
  /**
   * Locks the calling task holds while it waits for this one (handles or groups), for code that
   * holds handles rather than calling withLock: `acquire(k2, { holding: [h1] })`. Inside a
   * `withLock` or `tryWithLock` callback, the locks of the enclosing calls are known already; an
   * explicit list replaces them (`holding: []` says the task holds nothing, for work the callback
   * starts and does not wait for). The deadlock check reports a cycle only through such waits.
   * @defaultValue the locks of the enclosing `withLock` / `tryWithLock` calls
   */
  holding?: readonly (LockHandle | LockGroupLike)[];
  /**
   * When the task already holds this key on this Locker: take one more level of it (released with
   * the outermost level) instead of failing with `AlreadyHeldError`.
   * @defaultValue the Locker's `reentrant` option (false)
   */
  reentrant?: boolean;
}

/**
 * How long a run holds its key, for scheduled jobs (exclusive locks only). Both are measured from the
 * grant; `atLeastMs` by the server's clock.
 */
export interface RunLengthOptions {
  /**
   * After the holder releases (or its process exits), the key stays taken until this many ms after
   * the grant, by the server's clock: a job shorter than the spread of its replicas' timers then runs
   * once per tick, not once per replica. Kept in the lease table (`leaseTable`), and honoured by every
   * call on the key that passes `atLeastMs`, and by every lease; a call without it pays nothing.
   * @defaultValue 0 (the key is free at release)
   */
  atLeastMs?: number;
  /**
   * The longest the holder may keep the key: then its `signal` aborts with `LockExpiredError` and the
   * key is freed for others, even if the holder never releases. What the holder does after that is
   * no longer guarded. Enforced by this process's timer (and, on a lease, by its TTL if the process
   * stops): see the guide to scheduled jobs (docs/scheduled-jobs.md).
   * @defaultValue no limit
   */
  atMostMs?: number;
}

/** Options of `acquire` and `withLock`. */
export interface AcquireOptions extends TaskOptions, RunLengthOptions {
  /**
   * Take the lock shared: shared holders coexist; an exclusive holder excludes everyone.
   * @defaultValue false
   */
  shared?: boolean;
  /**
   * Give the handle a `fencingToken`: a bigint that strictly increases per key across every holder
   * ever (exclusive locks only). The session Locker keeps them in its `fencingTable`; leases always
   * have one.
   * @defaultValue false
   */
  fencing?: boolean;
  /**
   * Give up after this many ms with a `LockTimeoutError`; the server-side wait is cancelled. `0`
   * takes the lock only if it is free now, as `tryAcquire` does.
   * @defaultValue no timeout
   */
  timeout?: number;
  /** Aborting it gives up with `signal.reason`; the server-side wait is cancelled. */
  signal?: AbortSignal;
}

/** Options of `tryAcquire` and `tryWithLock`. */
export interface TryAcquireOptions extends TaskOptions, RunLengthOptions {
  /**
   * Take the lock shared.
   * @defaultValue false
   */
  shared?: boolean;
  /** Aborting it gives up with `signal.reason`. */
  signal?: AbortSignal;
}

/** Options of `acquireAll`. */
export interface AcquireAllOptions {
  /**
   * Take every lock shared.
   * @defaultValue false
   */
  shared?: boolean;
  /**
   * Give up after this many ms for the whole set, with a `LockTimeoutError`; nothing stays held.
   * @defaultValue no timeout
   */
  timeout?: number;
  /** Aborting it gives up with `signal.reason`; nothing stays held. */
  signal?: AbortSignal;
  /** As acquire's: locks the calling task holds while it waits for these. */
  holding?: readonly (LockHandle | LockGroupLike)[];
}

/** What `tryWithLock` resolves with: whether the lock was free, and then the callback's value. */
export type TryResult<T> =
  | {
      /** The lock was taken: the callback did not run. */
      acquired: false;
    }
  | {
      /** The lock was free: the callback ran, holding it. */
      acquired: true;
      /** What the callback returned. */
      value: T;
    };

/** What a Locker holds and waits for now. */
export interface LockerStats {
  /** Connections the Locker holds now (0 for leases and the in-memory Locker). */
  sessions: number;
  /** Handles held now. */
  held: number;
  /** Acquires not yet granted. */
  waiting: number;
}
