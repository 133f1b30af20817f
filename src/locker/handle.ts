import type { LockKey } from "../key.js";

/** A held lock from a {@link Locker}. Release it once; `await using` releases it for you. */
export interface LockHandle extends AsyncDisposable {
  readonly key: LockKey;
  readonly shared: boolean;
  /**
   * Aborted, with a `LockLostError` as reason, when the lock is lost (its session ended). Pass it to
   * the work the lock protects. It is not aborted by a normal release.
   */
  readonly signal: AbortSignal;
  /** With `acquire(key, { fencing: true })`: strictly increasing per key across every holder ever. */
  readonly fencingToken: bigint | undefined;
  /** Releases the lock. Idempotent; rejects with `LockNotHeldError` if PostgreSQL says it was not held. */
  release(): Promise<void>;
}
