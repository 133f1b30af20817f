/** A held lock, as every Locker hands it out. */
import type { LockKey } from "../key.js";

/** A held lock from a Locker. Release it once; `await using` releases it for you. */
export interface LockHandle extends AsyncDisposable {
  /** The key held. */
  readonly key: LockKey;
  /** Whether the lock is held shared (else exclusive). */
  readonly shared: boolean;
  /**
   * Aborted, with a `LockLostError` as reason, when the lock is lost (its session ended, its lease
   * expired, its Locker closed). Pass it to the work the lock protects. A normal release does not
   * abort it.
   */
  readonly signal: AbortSignal;
  /**
   * With `acquire(key, { fencing: true })`, and always on a lease: a bigint that strictly increases
   * per key across every holder ever, for a resource to refuse a holder that has been replaced.
   */
  readonly fencingToken: bigint | undefined;
  /**
   * Releases the lock. Idempotent.
   * @throws LockNotHeldError when the server says it was not held (a lease that expired).
   */
  release(): Promise<void>;
}
