/** A held lease: its renewals, and the deadline by which its holder is told it is lost. */
import { Handle } from "../contract/base-handle.js";
import type { LockHandle } from "../contract/handle.js";
import { LockLostError } from "../errors.js";
import type { LockKey } from "../key.js";
import { checkInteger } from "../validate.js";

/** A held lease: a {@link LockHandle} whose fencing token is always there. */
export interface LeaseHandle extends LockHandle {
  /** Strictly increasing per key across every grant, drawn by the statement that granted the lease. */
  readonly fencingToken: bigint;
  /**
   * For a long job: renews the lease now, and, when it was taken with `atMostMs`, moves that deadline
   * to `ms` from now (never earlier).
   * @throws LockLostError when the lease is lost (it expired, or was taken from the holder).
   * @throws InvalidArgumentError when `ms` is not an integer in [1, 86400000].
   */
  extend(ms: number): Promise<void>;
}

/** A lease Locker's settings, after defaults. */
export interface LeaseSettings {
  readonly ttlMs: number;
  readonly renewEveryMs: number;
  readonly expiryMarginMs: number;
  readonly maxPollMs: number;
  readonly table: string;
  readonly holderPrefix: string;
}

/** What a lease needs from its backend (lease/backend.ts). */
export interface LeaseOwner {
  readonly settings: LeaseSettings;
  /** Renews the lease: true when renewed, false when the server no longer has it alive. */
  renewOnServer(lease: Lease): Promise<boolean>;
  /** Takes a released lease off the table; rejects with LockNotHeldError if it was not there. */
  free(lease: Lease): Promise<void>;
  /** A lost lease: its entry is taken back if it is still there. */
  lost(lease: Lease): void;
}

/** A held lease. Its `signal` aborts with `LockLostError` when the lease can no longer be trusted. */
export class Lease extends Handle implements LeaseHandle {
  override readonly fencingToken: bigint;
  /** The holder id in the lease table. */
  readonly holder: string;
  readonly #backend: LeaseOwner;
  readonly #settings: LeaseSettings;
  /** performance.now() by which the lease must have been renewed, or the holder is told it is lost. */
  #deadline: number;
  #renewTimer: ReturnType<typeof setTimeout> | undefined;
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  #lastError: unknown;

  constructor(backend: LeaseOwner, key: LockKey, holder: string, shared: boolean, token: bigint, sentAt: number) {
    super(backend, key, shared);
    this.#backend = backend;
    this.#settings = backend.settings;
    this.holder = holder;
    this.fencingToken = token;
    this.#deadline = sentAt + this.#settings.ttlMs - this.#settings.expiryMarginMs;
    this.#scheduleRenewal(sentAt + this.#settings.renewEveryMs);
    this.#armDeadline();
  }

  override get signal(): AbortSignal {
    // A timer can fire late (a blocked event loop); whoever looks at the signal after the deadline
    // sees the truth anyway.
    if (this.held && performance.now() >= this.#deadline) this.#expire();
    return super.signal;
  }

  override release(): Promise<void> {
    this.#stop();
    // Past its deadline, the lease is lost, not released: whoever releases late learns the truth.
    if (this.held && performance.now() >= this.#deadline) this.#expire();
    return super.release();
  }

  async extend(ms: number): Promise<void> {
    checkInteger(ms, "extend", "ms", 1, 86_400_000);
    if (!this.held) throw this.signal.reason ?? new LockLostError(`the lease on ${this.key} was released`);
    const sentAt = performance.now();
    const renewed = await this.#backend.renewOnServer(this);
    if (!this.held) throw this.signal.reason ?? new LockLostError(`the lease on ${this.key} was released`);
    if (!renewed) {
      const error = new LockLostError(`the lease on ${this.key} was no longer held when extended`);
      this.lose(error);
      throw error;
    }
    this.#deadline = Math.max(this.#deadline, sentAt + this.#settings.ttlMs - this.#settings.expiryMarginMs);
    this.#armDeadline();
    this.postponeExpiry(ms);
  }

  protected override freeOnServer(): Promise<void> {
    return this.#backend.free(this);
  }

  protected override onExpired(): void {
    this.#stop();
  }

  protected override onLost(): void {
    this.#stop();
    this.#backend.lost(this);
  }

  #stop() {
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#deadlineTimer);
  }

  #scheduleRenewal(at: number) {
    // Early, on a grid of a quarter of renewEveryMs that every lease of the process shares: leases
    // granted at different moments then renew at the same ones, in the same statement (renewOnServer).
    const grid = this.#settings.renewEveryMs / 4;
    const due = Math.floor(at / grid) * grid;
    this.#renewTimer = setTimeout(() => this.#renew(), Math.max(0, due - performance.now()));
    // A lease never keeps the process alive: if it exits, the lease expires after its TTL.
    this.#renewTimer.unref?.();
  }

  #armDeadline() {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(() => this.#expire(), Math.max(0, this.#deadline - performance.now()));
    this.#deadlineTimer.unref?.();
  }

  #renew() {
    const sentAt = performance.now();
    this.#backend.renewOnServer(this).then(
      (renewed) => {
        if (!this.held) return;
        if (!renewed) {
          this.lose(
            new LockLostError(
              `the lease on ${this.key} was no longer held when renewed: it expired and may be someone else's`,
            ),
          );
          return;
        }
        this.#deadline = Math.max(this.#deadline, sentAt + this.#settings.ttlMs - this.#settings.expiryMarginMs);
        this.#armDeadline();
        this.#scheduleRenewal(sentAt + this.#settings.renewEveryMs);
      },
      (error: unknown) => {
        if (!this.held) return;
        // Try again soon; the deadline, not this failure, decides when the holder is told.
        this.#lastError = error;
        this.#scheduleRenewal(performance.now() + Math.min(1000, this.#settings.renewEveryMs / 2));
      },
    );
  }

  #expire() {
    this.lose(
      new LockLostError(
        `the lease on ${this.key} could not be renewed in time: it must be treated as expired`,
        this.#lastError === undefined ? undefined : { cause: this.#lastError },
      ),
    );
  }
}
