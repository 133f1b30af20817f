/**
 * The one implementation of a handle's life cycle that the three backends share: release once, loss
 * once, the `released` and `lost` events, and what the task context (task.ts) needs to know of it.
 */
import { LockExpiredError, type LockLostError } from "../errors.js";
import type { LockKey } from "../key.js";
import { publishLost, publishReleased } from "./events.js";
import type { LockHandle } from "./handle.js";
import { registerHeld } from "./task.js";

/**
 * The handle's life cycle, once for every backend. A backend supplies how a release reaches the
 * server (`freeOnServer`), what a loss frees locally (`onLost`), and, for session locks, the server
 * session that holds the lock (`backendPid`, for the deadlock check).
 */
export abstract class Handle implements LockHandle {
  readonly key: LockKey;
  readonly shared: boolean;
  fencingToken: bigint | undefined;
  /** performance.now() at the grant. */
  readonly grantedAt = performance.now();
  /** Created on first use: most handles are released without anyone reading their signal. */
  #lost: AbortController | undefined;
  #released: Promise<void> | undefined;
  /** The façade's set of held handles, which this one leaves when released or lost. */
  #heldIn: Set<Handle> | undefined;
  /** atMostMs: when (performance.now()) the lock is taken from the holder, and the timer that does it. */
  #expiresAt: number | undefined;
  /** When expireAfter was called: the limit the error reports is measured from there, as it was given. */
  #expiryArmedAt = 0;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(owner: object, key: LockKey, shared: boolean) {
    this.key = key;
    this.shared = shared;
    registerHeld(this, {
      owner,
      key,
      shared,
      handle: this,
      isHeld: () => this.held,
      backendPid: () => (this.held ? this.backendPid() : undefined),
    });
  }

  get signal(): AbortSignal {
    this.#lost ??= new AbortController();
    return this.#lost.signal;
  }

  /** Neither released nor lost. */
  get held(): boolean {
    return this.#released === undefined && !this.#lost?.signal.aborted;
  }

  release(): Promise<void> {
    if (this.#released === undefined) {
      // Not `this.signal`: most handles are released without anyone reading it, and making an
      // AbortController for each cost a fifth of the throughput of tryAcquire/release (measured).
      const lost = this.#lost?.signal.aborted ?? false;
      this.#released = lost ? Promise.resolve() : this.#freeOnRelease();
    }
    return this.#released;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** Puts the handle in `held` (the Locker's handles held now) until it is released or lost. */
  heldIn(held: Set<Handle>): void {
    held.add(this);
    this.#heldIn = held;
  }

  /**
   * Takes the lock from the holder `ms` from now (atMostMs): its signal aborts with a
   * `LockExpiredError` and the lock is freed for others, whether or not the holder releases.
   */
  expireAfter(ms: number): void {
    this.#expiryArmedAt = performance.now();
    this.#expiresAt = this.#expiryArmedAt + ms;
    this.#armExpiry();
  }

  /** Moves the atMostMs deadline to `ms` from now, if that is later (a lease's `extend`). */
  protected postponeExpiry(ms: number): void {
    if (this.#expiresAt === undefined) return;
    this.#expiresAt = Math.max(this.#expiresAt, performance.now() + ms);
    this.#armExpiry();
  }

  #armExpiry() {
    clearTimeout(this.#expiryTimer);
    const at = this.#expiresAt as number;
    // Unref'd: the holder's work keeps the process alive, not its deadline.
    this.#expiryTimer = setTimeout(() => this.#expire(), Math.max(0, at - performance.now()));
    this.#expiryTimer.unref?.();
  }

  #expire() {
    if (!this.held) return;
    const limit = Math.round((this.#expiresAt as number) - this.#expiryArmedAt);
    const error = new LockExpiredError(this.key.toString(), limit);
    this.#end();
    this.onExpired();
    // Freed as a release would free it; the holder's own release() later does nothing.
    this.#released = this.freeOnServer().catch(() => {});
    this.#lost ??= new AbortController();
    this.#lost.abort(error);
    publishLost(() => ({ handle: this, key: this.key, shared: this.shared, error }));
  }

  /** The lock is gone (its session ended, its lease expired, the Locker closed): tell the holder. */
  lose(error: LockLostError): void {
    if (this.#lost?.signal.aborted) return;
    const released = this.#released !== undefined;
    this.#released ??= Promise.resolve();
    this.#lost ??= new AbortController();
    this.#lost.abort(error);
    if (released) return;
    this.#end();
    publishLost(() => ({ handle: this, key: this.key, shared: this.shared, error }));
    this.onLost(error);
  }

  /** Frees the lock on the server (a handle that was released, not lost). */
  protected abstract freeOnServer(): Promise<void>;

  /** What a loss leaves to the backend (nothing by default: the server freed the lock already). */
  protected onLost(_error: LockLostError): void {}

  /** What the backend stops when the holder ran past its atMostMs (a lease's renewals). */
  protected onExpired(): void {}

  /** The server session that holds the lock, for the deadlock check; undefined when not a session lock. */
  protected backendPid(): number | undefined {
    return undefined;
  }

  #freeOnRelease(): Promise<void> {
    this.#end();
    publishReleased(() => ({
      handle: this,
      key: this.key,
      shared: this.shared,
      heldMs: performance.now() - this.grantedAt,
    }));
    return this.freeOnServer();
  }

  #end() {
    this.#heldIn?.delete(this);
    this.#heldIn = undefined;
    clearTimeout(this.#expiryTimer);
  }
}
