/**
 * The Locker's sessions: at most `maxSessions` connections shared by every lock, with the rules
 * that keep a release from ever being stuck behind a wait:
 * - short statements (try-locks, releases) go to a session that is not in a blocking wait;
 * - a blocking wait only runs on a session that holds nothing and has nothing queued, and one
 *   session is always left for short statements (so with maxSessions = 1 nothing waits on the server);
 * - a session that holds nothing and does nothing goes back to the pool after `idleMs`.
 */
import { ClosedError } from "../errors.js";
import type { Driver } from "../session/driver.js";
import { Session, type SessionOptions } from "../session/session.js";
import { untilAborted } from "../signals.js";

export interface Slot {
  readonly session: Session;
  /** Server-side locks this session holds for the Locker. */
  held: number;
  /** A blocking wait runs on it. */
  waiting: boolean;
  /** Statements the Locker is running on it. */
  busy: number;
  idleTimer: NodeJS.Timeout | undefined;
}

export interface SessionPoolOptions extends SessionOptions {
  maxSessions: number;
  idleMs: number;
  /** Called once when a session ends by itself, with everything it held still counted. */
  onLost(slot: Slot, reason: unknown): void;
  /** Prepares a new session before its first use (the revocation LISTEN); a failure is ignored. */
  prepare?(session: Session): Promise<void>;
}

export class SessionPool {
  readonly #driver: Driver;
  readonly #options: SessionPoolOptions;
  readonly #slots = new Set<Slot>();
  #opening = 0;
  /** Callers waiting for a session to become usable for short statements. */
  #shortWaiters: (() => void)[] = [];
  /** Sessions on their way back to the pool; close() waits for them. */
  readonly #releasing = new Set<Promise<void>>();
  #closed = false;

  constructor(driver: Driver, options: SessionPoolOptions) {
    this.#driver = driver;
    this.#options = options;
  }

  get size(): number {
    return this.#slots.size;
  }

  /** A session for a short statement: the least busy non-waiting one, or a new one while under the cap. */
  async forShortStatement(signal: AbortSignal): Promise<Slot> {
    for (;;) {
      if (this.#closed) throw new ClosedError("the Locker");
      signal.throwIfAborted();
      let best: Slot | undefined;
      for (const slot of this.#slots) {
        if (slot.waiting || slot.session.isLost) continue;
        if (!best || slot.session.pending < best.session.pending) best = slot;
      }
      if (best && (best.session.pending === 0 || !this.#canOpen())) return this.#use(best);
      if (this.#canOpen()) return this.#open(false, signal);
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        this.#shortWaiters.push(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
      });
    }
  }

  /**
   * A session for a blocking wait: one that holds nothing and runs nothing, or a new one, as long as
   * a session stays free for short statements. Undefined when the rules allow none now.
   */
  async forWait(options: { open?: boolean; signal?: AbortSignal } = {}): Promise<Slot | undefined> {
    if (this.#closed) throw new ClosedError("the Locker");
    let waiting = 0;
    let empty: Slot | undefined;
    for (const slot of this.#slots) {
      if (slot.waiting) waiting++;
      else if (!empty && isEmpty(slot)) empty = slot;
    }
    const size = this.#slots.size;
    const room = this.#options.maxSessions - size - this.#opening;
    // After the wait starts, some session must still serve short statements: one that exists, or room to open one.
    if (empty && (size - waiting - 1 > 0 || room > 0)) return this.#markWaiting(this.#use(empty));
    if (options.open !== false && room > 0 && (size - waiting > 0 || room - 1 > 0))
      return this.#open(true, options.signal);
    return undefined;
  }

  #markWaiting(slot: Slot): Slot {
    slot.waiting = true;
    return slot;
  }

  /** The Locker is done with a statement on this slot (or its wait ended). */
  done(slot: Slot): void {
    slot.busy--;
    if (slot.waiting) {
      slot.waiting = false;
      this.#wakeShortWaiters();
    }
    this.#idleCheck(slot);
  }

  /** Marks a slot in use for a statement the Locker runs on it (a release); pair with done(). */
  use(slot: Slot): Slot {
    return this.#use(slot);
  }

  #use(slot: Slot): Slot {
    slot.busy++;
    clearTimeout(slot.idleTimer);
    slot.idleTimer = undefined;
    return slot;
  }

  #canOpen(): boolean {
    return this.#slots.size + this.#opening < this.#options.maxSessions;
  }

  /**
   * Opens a session and hands it straight to its first user, for a wait or a short statement.
   * Taking a connection cannot be cancelled (a pg.Pool's queue, a server that accepts and never
   * answers), so an abort stops the caller's waiting, not the connect (issue #18): a session that
   * opens after its caller gave up joins the Locker as an idle one, or goes back if it was closed.
   */
  async #open(forWait: boolean, signal?: AbortSignal): Promise<Slot> {
    this.#opening++;
    const opening = Session.open(this.#driver, this.#options)
      .then(async (session) => {
        await this.#options.prepare?.(session).catch(() => {});
        return session;
      })
      .finally(() => {
        this.#opening--;
      });
    if (!signal) return this.#adopt(await opening, forWait, 1);
    const session = await untilAborted(opening, signal, (late) => this.#adopt(late, false, 0).catch(() => {}));
    return this.#adopt(session, forWait, 1);
  }

  /** Makes an opened session a slot of the pool, with `busy` users (0: idle, given back after idleMs). */
  async #adopt(session: Session, forWait: boolean, busy: number): Promise<Slot> {
    const slot: Slot = { session, held: 0, waiting: forWait, busy, idleTimer: undefined };
    this.#slots.add(slot);
    if (!forWait) this.#wakeShortWaiters();
    session.lostSignal.addEventListener(
      "abort",
      () => {
        this.#slots.delete(slot);
        clearTimeout(slot.idleTimer);
        this.#options.onLost(slot, session.lostSignal.reason);
        this.#giveBack(session); // as broken, so the pool drops it
        this.#wakeShortWaiters();
      },
      { once: true },
    );
    if (this.#closed) {
      // close() ran while this session was opening: it must not outlive the Locker.
      this.#slots.delete(slot);
      await session.release();
      throw new ClosedError("the Locker");
    }
    if (busy === 0) this.#idleCheck(slot);
    return slot;
  }

  #idleCheck(slot: Slot) {
    if (slot.held > 0 || slot.busy > 0 || slot.waiting || slot.session.pending > 0 || !this.#slots.has(slot)) return;
    if (this.#shortWaiters.length > 0) this.#wakeShortWaiters();
    clearTimeout(slot.idleTimer);
    slot.idleTimer = setTimeout(() => {
      if (slot.held > 0 || slot.busy > 0 || slot.waiting) return;
      this.#slots.delete(slot);
      this.#giveBack(slot.session);
      this.#wakeShortWaiters();
    }, this.#options.idleMs);
    slot.idleTimer.unref();
  }

  #giveBack(session: Session) {
    const released = session.release().finally(() => this.#releasing.delete(released));
    this.#releasing.add(released);
  }

  #wakeShortWaiters() {
    const waiters = this.#shortWaiters;
    this.#shortWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Gives every session back; ending a session is what releases whatever it still holds. */
  async close(release: (slot: Slot) => Promise<void>): Promise<void> {
    this.#closed = true;
    this.#wakeShortWaiters();
    const slots = [...this.#slots];
    this.#slots.clear();
    await Promise.all(
      slots.map(async (slot) => {
        clearTimeout(slot.idleTimer);
        await release(slot);
        await slot.session.release();
      }),
    );
    await Promise.allSettled(this.#releasing);
  }
}

function isEmpty(slot: Slot): boolean {
  return slot.held === 0 && slot.busy === 0 && slot.session.pending === 0 && !slot.session.isLost;
}
