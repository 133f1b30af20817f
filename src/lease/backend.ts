/**
 * The lease backend: each lock is a lease in a table, with a TTL on the server's clock, and each
 * statement is one short transaction on whatever connection the driver gives (sql/lease.ts). See
 * lease/locker.ts for what the holder is told, and when.
 */
import type { Leaderboard, LockBackend, LockRequest, Wakeups } from "../contract/backend.js";
import { TableLeaderboard } from "../contract/leaderboard.js";
import { ConnectionError, LockNotHeldError } from "../errors.js";
import type { LockKey, LockMode } from "../key.js";
import { PendingCalls, settleWithin } from "../pending.js";
import { CLEAN_UP_BATCH, QUEUE_ALL, QUEUE_NONE } from "../sql/lease.js";
import { keptFor, LeaseTable } from "../sql/lease-table.js";
import { Lease, type LeaseOwner, type LeaseSettings } from "./lease.js";
import type { LeaseQuery } from "./query.js";
import { localWakeups, pause, wake } from "./wakeups.js";

/** Most leases one renewal statement carries, and most renewal statements out at once. */
const RENEW_BATCH = 1_000;
const RENEWALS_OUT = 2;

/** A waiting acquire's first pause; pauses double from there up to maxPollMs, with jitter. */
const FIRST_POLL_MS = 5;
/** The first waiter in a key's queue polls at least this often, the n-th every n times this (a contended key costs ~10–20 statements a second per waiter near the head). */
const HEAD_POLL_MS = 100;
/** Expired rows are deleted by a Locker at most this often, after one of its grants. */
const CLEAN_UP_EVERY_MS = 10_000;
/** At most this many batches per clean-up (CLEAN_UP_BATCH rows each): the rest waits for the next. */
const CLEAN_UP_MAX_BATCHES = 100;

export class LeaseBackend implements LockBackend<Lease>, LeaseOwner {
  readonly #settings: LeaseSettings;
  readonly #query: LeaseQuery;
  readonly #leases: LeaseTable;
  /** Statements that outlive the call that sent them (take-backs, clean-ups): close() waits for them. */
  readonly #pending = new PendingCalls();
  #holders = 0;
  #waiting = 0;
  /** Renewals waiting to be sent, and batches out (renewOnServer). */
  readonly #renewals: { handle: Lease; resolve(renewed: boolean): void; reject(error: unknown): void }[] = [];
  #renewalsOut = 0;
  #lastCleanUp = Number.NEGATIVE_INFINITY;
  #announced: Promise<void> | undefined;
  readonly wakeups: Wakeups;
  readonly leaders: Leaderboard;

  constructor(query: LeaseQuery, settings: LeaseSettings) {
    this.#query = query;
    this.#settings = settings;
    this.#leases = new LeaseTable(settings.table, (text) => this.#query(text, []));
    this.wakeups = localWakeups(settings.table);
    this.leaders = new TableLeaderboard({
      kind: "lease",
      table: this.#leases,
      query: (statement) => this.#bounded(statement.text, [...statement.values]),
      holderOf: (handle) => (handle instanceof Lease && handle.held ? handle.holder : undefined),
    });
  }

  get settings(): LeaseSettings {
    return this.#settings;
  }

  request({ key, mode }: LockRequest, wait: boolean, signal: AbortSignal): Promise<Lease | undefined> {
    return this.#request(key, mode, wait, signal);
  }

  /** A lease has its token from the statement that granted it. */
  async fence(): Promise<void> {}

  async reserve(handle: Lease, atLeastMs: number): Promise<number | undefined> {
    return keptFor(await this.#run(this.#leases.sql.reserve, [handle.key.identity, atLeastMs]));
  }

  async holdersOf(keys: readonly LockKey[]): Promise<{ key: LockKey; holder: string }[]> {
    const byIdentity = new Map(keys.map((key) => [key.identity, key]));
    const rows = await this.#run(this.#leases.sql.holders, [[...byIdentity.keys()]]);
    return rows.map((row) => ({ key: byIdentity.get(String(row.key)) as LockKey, holder: String(row.holder) }));
  }

  stats(): { sessions: number; waiting: number } {
    return { sessions: 0, waiting: this.#waiting };
  }

  /**
   * Each lost handle took its entry back (lost() → #forget, tracked): wait for those statements, and
   * for grants given up on that may still commit, and the clean-ups they then need (#bounded).
   */
  async close(): Promise<void> {
    await this.#pending.drained();
  }

  /**
   * Tries, and while `wait`, takes a place in the key's queue and tries again after pauses that double
   * up to maxPollMs (or a local release). Grants follow the queue (sql/lease.ts acquire): a waiter is
   * not overtaken by later ones, whichever process polls first (issue #28: in-process hand-overs used
   * to keep a key in one process while the others' polls backed off).
   */
  async #request(key: LockKey, mode: LockMode, wait: boolean, signal: AbortSignal): Promise<Lease | undefined> {
    const holder = `${this.#settings.holderPrefix}-${++this.#holders}`;
    let place = wait ? QUEUE_ALL : QUEUE_NONE;
    let granted = false;
    this.#waiting++;
    try {
      for (let delay = FIRST_POLL_MS; ; delay = Math.min(delay * 2, this.#settings.maxPollMs)) {
        signal.throwIfAborted();
        const sentAt = performance.now();
        let token: bigint | undefined;
        let ahead = 0;
        try {
          ({ token, ahead } = await this.#grant(key, holder, mode, place, signal));
        } catch (error) {
          // The grant may have committed and its answer been lost, or come after the caller gave up
          // (a timeout, an abort, close()): take the entry back (best effort), or it would block others
          // for a whole TTL. Never handed out.
          this.#forget(key, holder);
          throw error;
        }
        // An answer that came after the holder's deadline proves nothing any more: not a grant.
        if (token !== undefined && performance.now() >= sentAt + this.#settings.ttlMs - this.#settings.expiryMarginMs) {
          this.#forget(key, holder);
          token = undefined;
        }
        if (token !== undefined) {
          granted = true;
          const handle = new Lease(this, key, holder, mode === "shared", token, sentAt);
          this.#cleanUpNowAndThen();
          return handle;
        }
        if (!wait) return undefined;
        if (place === QUEUE_ALL) place = await this.#enqueue(key, holder, signal);
        // The first in the queue is the one who can be granted next: it looks every HEAD_POLL_MS at most,
        // the second every two, and so on, so that the next in line is looking when its turn comes.
        if (place !== QUEUE_ALL) delay = Math.min(delay, HEAD_POLL_MS * (ahead + 1));
        // Full jitter in [delay/2, delay): waiters that started together do not poll together.
        await pause(this.#settings.table, key, delay / 2 + (Math.random() * delay) / 2, signal);
      }
    } finally {
      this.#waiting--;
      // A place left behind would hold up the waiters after it until it runs out.
      if (!granted && place !== QUEUE_ALL && place !== QUEUE_NONE) this.#leaveQueue(key, place);
    }
  }

  /** How long a waiter's place in a queue lasts without a poll that renews it. */
  get #placeMs(): number {
    return 3 * this.#settings.maxPollMs + 1_000;
  }

  /** A place in the key's queue; without one (the statement failed), the wait goes on unqueued. */
  async #enqueue(key: LockKey, holder: string, signal: AbortSignal): Promise<string> {
    try {
      const rows = await this.#run(this.#leases.sql.enqueue, [key.identity, holder, this.#placeMs], signal);
      return String(rows[0]?.ticket);
    } catch (error) {
      signal.throwIfAborted();
      if (error instanceof ConnectionError) return QUEUE_ALL;
      throw error;
    }
  }

  #leaveQueue(key: LockKey, place: string) {
    this.#pending.track(this.#run(this.#leases.sql.dequeue, [key.identity, place])).then(
      () => wake(this.#settings.table, key),
      () => {},
    );
  }

  async #grant(
    key: LockKey,
    holder: string,
    mode: LockMode,
    place: string,
    signal: AbortSignal,
  ): Promise<{ token: bigint | undefined; ahead: number }> {
    // Before the first grant, the table learns this Locker's TTL: clean-up keeps rows that long.
    this.#announced ??= this.#run(this.#leases.sql.announceTtl, [this.#settings.ttlMs]).then(
      () => {},
      (error: unknown) => {
        this.#announced = undefined;
        throw error;
      },
    );
    await this.#announced;
    // A grant given up on may still commit after the caller's clean-up ran: clean up again once it
    // has settled, or its entry would block others for a whole TTL.
    const rows = await this.#run(
      this.#leases.sql.acquire,
      [key.identity, holder, mode === "shared", this.#settings.ttlMs, place, this.#placeMs],
      signal,
      () => this.#forget(key, holder),
    );
    const token = rows[0]?.token;
    return {
      token: token === undefined || token === null ? undefined : BigInt(token as string),
      ahead: Number(rows[0]?.ahead ?? 0),
    };
  }

  /** Renews `handle`'s lease: true when renewed, false when the server no longer has it alive. */
  renewOnServer(handle: Lease): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.#renewals.push({ handle, resolve, reject });
      // The renewals due in this turn of the event loop, and those due while a batch is out, travel
      // together: one statement renews up to RENEW_BATCH leases (issue #26).
      if (this.#renewals.length === 1) setImmediate(() => this.#sendRenewals());
    });
  }

  #sendRenewals() {
    while (this.#renewals.length > 0 && this.#renewalsOut < RENEWALS_OUT) {
      const batch = this.#renewals.splice(0, RENEW_BATCH);
      this.#renewalsOut++;
      const keys = batch.map(({ handle }) => handle.key.identity);
      const holders = batch.map(({ handle }) => handle.holder);
      this.#run(this.#leases.sql.renew, [keys, holders, this.#settings.ttlMs])
        .then(
          (rows) => {
            const renewed = new Set(rows.map((row) => String(row.renewed)));
            for (const { handle, resolve } of batch) resolve(renewed.has(`${handle.key.identity} ${handle.holder}`));
          },
          (error: unknown) => {
            for (const { reject } of batch) reject(error);
          },
        )
        .finally(() => {
          this.#renewalsOut--;
          this.#sendRenewals();
        });
    }
  }

  /** Takes a released lease off the table. */
  async free(handle: Lease): Promise<void> {
    if (!(await this.#releaseOnServer(handle))) {
      throw new LockNotHeldError(
        handle.key.toString(),
        "the lease table has no lease of this holder: it expired and was taken or cleaned up, or a failover lost it",
      );
    }
  }

  /** A lease that was lost: its entry is taken back if it is still there. */
  lost(handle: Lease) {
    this.#forget(handle.key, handle.holder);
  }

  async #releaseOnServer(handle: Lease): Promise<boolean> {
    try {
      const rows = await this.#run(this.#leases.sql.release, [handle.key.identity, handle.holder]);
      return Number(rows[0]?.released) > 0;
    } finally {
      wake(this.#settings.table, handle.key);
    }
  }

  #forget(key: LockKey, holder: string) {
    this.#pending.track(this.#run(this.#leases.sql.release, [key.identity, holder])).then(
      () => wake(this.#settings.table, key),
      () => {},
    );
  }

  /** Deletes rows whose holders all expired, at most once a minute per Locker, never waiting for it. */
  #cleanUpNowAndThen() {
    const now = performance.now();
    if (now - this.#lastCleanUp < CLEAN_UP_EVERY_MS) return;
    this.#lastCleanUp = now;
    // A full batch means more is waiting: delete on until a batch comes back short, so the table
    // keeps up with any grant rate (issue #26: 100 rows a minute let 5,000 expired rows pile up).
    this.#pending
      .track(
        (async () => {
          for (let batches = 0; batches < CLEAN_UP_MAX_BATCHES; batches++) {
            const rows = await this.#run(this.#leases.sql.cleanUp, [this.#settings.ttlMs]);
            if (Number(rows[0]?.deleted ?? 0) < CLEAN_UP_BATCH) return;
          }
        })(),
      )
      .catch(() => {});
  }

  /** Runs a statement; the first time the table is missing, creates it (and its sequence) and runs it again. */
  #run(text: string, params: unknown[], signal?: AbortSignal, afterAbandoned?: () => void) {
    return this.#leases.run(() => this.#bounded(text, params, signal, afterAbandoned));
  }

  /**
   * A statement is given up on (its outcome unknown) when `signal` aborts, or after the time a lease
   * can be trusted for (ttlMs - expiryMarginMs): a later answer could prove nothing. A connection the
   * network dropped without a word (a black hole) would otherwise hang the call for minutes. The timer
   * also keeps the process alive while a statement is out: a driver may not (postgres.js, seen in the
   * chaos suite: the process exited mid-acquire with an unsettled await). `afterAbandoned` runs when a
   * statement given up on settles after all.
   */
  #bounded(
    text: string,
    params: unknown[],
    signal?: AbortSignal,
    afterAbandoned?: () => void,
  ): Promise<readonly Record<string, unknown>[]> {
    const limitMs = this.#settings.ttlMs - this.#settings.expiryMarginMs;
    const running = this.#query(text, params);
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const abandon = (reason: unknown) => {
        settle();
        reject(reason);
        // close() waits for the clean-up (bounded): the statement given up on can still commit, and
        // once the caller has ended its pool, no clean-up could take the entry back (issue #26: the
        // key then stayed taken by nobody for a whole TTL).
        if (afterAbandoned) this.#pending.track(settleWithin(limitMs, running.then(afterAbandoned, afterAbandoned)));
      };
      const onAbort = () => abandon(signal?.reason);
      const timer = setTimeout(
        () =>
          abandon(new ConnectionError(`a lease statement got no answer within ${limitMs} ms (ttlMs - expiryMarginMs)`)),
        limitMs,
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      running.then(
        (rows) => {
          settle();
          resolve(rows);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
  }
}
