/**
 * The advisory-session backend of the Locker: many locks over a few sessions. Handles in one Locker
 * conflict exactly as separate processes would; contention inside the Locker is queued locally, so at
 * most one request per key is on the server. Loss of a session aborts the signal of every handle it
 * carried.
 */
import { lockError, releaseLevel, tryLock, waitForLock } from "../acquire.js";
import type { Leaderboard, LockBackend, LockRequest, Wakeups } from "../contract/backend.js";
import { Handle } from "../contract/base-handle.js";
import { TableLeaderboard } from "../contract/leaderboard.js";
import type { HeldLock } from "../contract/task.js";
import { DeadlockWatch } from "../deadlock.js";
import { ClosedError, ConnectionError, LockLostError, RevokedError, sessionEndedError } from "../errors.js";
import { ownerLabel, ownerOf } from "../identity.js";
import type { LockKey, LockMode } from "../key.js";
import type { Liveness } from "../liveness.js";
import { readLocks } from "../locks.js";
import type { Driver } from "../session/driver.js";
import { Session } from "../session/session.js";
import { sleep } from "../signals.js";
import type { Statement } from "../sql/advisory.js";
import * as sql from "../sql/advisory.js";
import { keptFor, LeaseTable } from "../sql/lease-table.js";
import { listenForRevocations, parseRevocation, REVOKE_CHANNEL, unlistenRevocations } from "../sql/notify.js";
import { FencingTokens } from "./fencing.js";
import { notifierOf } from "./notifier.js";
import { SessionPool, type Slot } from "./sessions.js";

export interface AdvisoryBackendOptions {
  driver: Driver;
  maxSessions: number;
  idleMs: number;
  keepaliveMs: number;
  probeTimeoutMs: number;
  serverSettings: Liveness["serverSettings"];
  applicationName: string;
  fencingTable: string;
  /** Where the runs of `atLeastMs` are kept (the lease table). */
  leaseTable: string;
  deadlockTimeoutMs: number;
}

interface KeyState {
  readonly key: LockKey;
  /** The mode the Locker holds on the server, while it holds the key. */
  mode: LockMode | undefined;
  slot: Slot | undefined;
  readonly holders: Set<Holder>;
  /** A server statement for this key (acquire or release) is in flight. */
  busy: boolean;
  readonly queue: Queued[];
}

interface Queued {
  readonly mode: LockMode;
  readonly holding: readonly HeldLock[];
  readonly signal: AbortSignal;
  resolve(holder: Holder | undefined): void;
  reject(error: unknown): void;
  /** Detaches the queue's abort handling when the request leaves the queue. */
  dequeued(): void;
}

export class AdvisoryBackend implements LockBackend<Holder> {
  readonly #sessions: SessionPool;
  readonly #driver: Driver;
  readonly #fencing: FencingTokens;
  readonly #leases: LeaseTable;
  readonly #applicationName: string;
  readonly #serverSettings: Liveness["serverSettings"];
  readonly #deadlock: DeadlockWatch;
  /** What the deadlock look needs to know of the server once (readLocks). */
  readonly #server: { version?: number } = {};
  /** Sessions outside the pool of shared sessions (LISTEN); close() gives them back too. */
  readonly #dedicated = new Set<Session>();
  readonly #keys = new Map<string, KeyState>();
  readonly #slotKeys = new Map<Slot, Set<KeyState>>();
  readonly #closing: AbortSignal;
  readonly leaders: Leaderboard;
  #waiting = 0;

  constructor(options: AdvisoryBackendOptions, closing: AbortSignal) {
    this.#closing = closing;
    this.#driver = options.driver;
    this.#applicationName = options.applicationName;
    this.#serverSettings = options.serverSettings;
    this.#fencing = new FencingTokens(options.fencingTable);
    this.#leases = new LeaseTable(options.leaseTable, (text) => this.#query({ text, values: [] }));
    this.leaders = new TableLeaderboard({
      kind: "session",
      table: this.#leases,
      query: (statement) => this.#query(statement),
      holderOf: (handle) => (handle instanceof Holder && handle.held ? handle.sessionPid : undefined),
    });
    this.#deadlock = new DeadlockWatch(options.deadlockTimeoutMs, () =>
      readLocks((statement) => this.#query(statement), undefined, this.#server),
    );
    this.#sessions = new SessionPool(this.#driver, {
      maxSessions: options.maxSessions,
      idleMs: options.idleMs,
      keepaliveMs: options.keepaliveMs,
      probeTimeoutMs: options.probeTimeoutMs,
      serverSettings: options.serverSettings,
      applicationName: options.applicationName,
      onLost: (slot, reason) => this.#onSessionLost(slot, reason),
      prepare: (session) => this.#listenForRevocations(session),
    });
  }

  get wakeups(): Wakeups {
    return notifierOf(this);
  }

  stats(): { sessions: number; waiting: number } {
    let queued = 0;
    for (const state of this.#keys.values()) queued += state.queue.length;
    return { sessions: this.#sessions.size, waiting: this.#waiting + queued };
  }

  async close(): Promise<void> {
    await Promise.all([...this.#dedicated].map((session) => session.release()));
    await this.#sessions.close(async (slot) => {
      if (slot.session.isLost) return;
      const outcome = await slot.session.run(sql.unlockAll());
      if (outcome.status !== "done") {
        await slot.session.discard(new ConnectionError("could not release locks on close", { cause: outcome }));
      }
    });
  }

  async holdersOf(keys: readonly LockKey[]): Promise<{ key: LockKey; holder: string }[]> {
    const byTag = new Map(keys.map((key) => [sql.tagText(key), key]));
    const rows = await this.#query(sql.heldAmong(keys));
    return rows.map((row) => {
      const owner = ownerOf(row.application as string | null);
      return {
        key: byTag.get(String(row.tag)) as LockKey,
        holder: owner ? ownerLabel(owner) : `pid ${String(row.pid)}`,
      };
    });
  }

  /** A run's record lives in the lease table, on the server's clock: it outlives this process (issue #25). */
  async reserve(holder: Holder, atLeastMs: number): Promise<number | undefined> {
    const statement = { text: this.#leases.sql.reserve, values: [holder.key.identity, atLeastMs] };
    return keptFor(await this.#leases.run(() => this.#query(statement)));
  }

  request({ key, mode, holding }: LockRequest, wait: boolean, signal: AbortSignal): Promise<Holder | undefined> {
    return this.#request(key, mode, wait, signal, holding);
  }

  /** A session of its own, outside the multiplexing rules (a LISTEN connection). */
  async openDedicatedSession(): Promise<Session> {
    if (this.#closing.aborted) throw new ClosedError("the Locker");
    const session = await Session.open(this.#driver, {
      applicationName: this.#applicationName,
      serverSettings: this.#serverSettings,
    });
    this.#dedicated.add(session);
    session.lostSignal.addEventListener("abort", () => this.#dedicated.delete(session), { once: true });
    if (this.#closing.aborted) {
      await session.release();
      throw new ClosedError("the Locker");
    }
    return session;
  }

  /** Gives back a session from openDedicatedSession(). */
  async releaseDedicatedSession(session: Session): Promise<void> {
    this.#dedicated.delete(session);
    await session.release();
  }

  /** Runs one short statement on a Locker session (a NOTIFY). */
  async runShort(statement: Statement): Promise<void> {
    await this.#query(statement);
  }

  async #query(statement: Statement): Promise<Record<string, unknown>[]> {
    const slot = await this.#sessions.forShortStatement(this.#closing);
    try {
      return await slot.session.query(statement);
    } finally {
      this.#sessions.done(slot);
    }
  }

  /**
   * A server-side wait. When the waiting task holds locks on the server, the wait says so in its
   * text, and the deadlock check watches it (deadlock.ts).
   */
  #waitOnServer(slot: Slot, key: LockKey, mode: LockMode, signal: AbortSignal, holding: readonly HeldLock[]) {
    const session = slot.session;
    const wait = { pid: session.backendPid, key, cancel: () => session.cancelWait() };
    const holds = () => serverHolds(holding);
    return this.#deadlock.run(wait, holds().length > 0, (interrupted) =>
      waitForLock(session, key, mode, { signal, interrupted, holds }),
    );
  }

  /**
   * The token is drawn on the session that holds the lock: if that session has died, the statement
   * fails, so a holder that lost its lock can never draw a token after (and so above) its successor.
   */
  async fence(holder: Holder): Promise<void> {
    try {
      const slot = this.#keys.get(holder.key.identity)?.slot;
      if (!slot || holder.signal.aborted)
        throw holder.signal.reason ?? new LockLostError(`lock ${holder.key} was lost`);
      this.#sessions.use(slot);
      try {
        holder.fencingToken = await this.#fencing.next(slot.session, holder.key);
      } finally {
        this.#sessions.done(slot);
      }
      // The session can be declared lost (e.g. by the liveness probe) while the token statement is in
      // flight, and that statement can still complete: such a holder must not be handed out as a
      // grant. Seen in a 5-minute chaos run: acquire resolved with a handle whose signal was already
      // aborted, and the server had given the lock to the next waiter.
      if (holder.signal.aborted) throw holder.signal.reason;
    } catch (error) {
      await holder.release().catch(() => {});
      throw error;
    }
  }

  #stateOf(key: LockKey): KeyState {
    let state = this.#keys.get(key.identity);
    if (!state) {
      state = { key, mode: undefined, slot: undefined, holders: new Set(), busy: false, queue: [] };
      this.#keys.set(key.identity, state);
    }
    return state;
  }

  /** Local arbitration first: the server sees one request per key at a time. */
  #request(
    key: LockKey,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    holding: readonly HeldLock[],
  ): Promise<Holder | undefined> {
    const state = this.#stateOf(key);
    if (this.#canJoin(state, mode)) return Promise.resolve(this.#grant(state));
    if (state.holders.size === 0 && !state.busy && state.queue.length === 0) {
      return this.#acquireOnServer(state, mode, wait, signal, holding);
    }
    if (!wait) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const index = state.queue.indexOf(queued);
        if (index >= 0) state.queue.splice(index, 1);
        this.#forgetIfUnused(state);
        reject(signal.reason);
      };
      // Once dequeued, the request's outcome is the server phase's alone: a late abort is handled there
      // (cancel, then release a grant that won), never by rejecting a request that may still be granted.
      const dequeued = () => signal.removeEventListener("abort", onAbort);
      const queued: Queued = {
        mode,
        holding,
        signal,
        resolve: (holder) => {
          dequeued();
          resolve(holder);
        },
        reject: (error) => {
          dequeued();
          reject(error);
        },
        dequeued,
      };
      signal.addEventListener("abort", onAbort, { once: true });
      state.queue.push(queued);
    });
  }

  /** A shared request joins shared holders of this Locker unless someone queued ahead of it. */
  #canJoin(state: KeyState, mode: LockMode): boolean {
    return (
      mode === "shared" && state.mode === "shared" && state.holders.size > 0 && !state.busy && state.queue.length === 0
    );
  }

  async #acquireOnServer(
    state: KeyState,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    holding: readonly HeldLock[],
  ) {
    state.busy = true;
    this.#waiting++;
    try {
      const slot = await this.#takeOnServer(state.key, mode, wait, signal, holding);
      if (!slot) return undefined;
      state.slot = slot;
      state.mode = mode;
      const keys = this.#slotKeys.get(slot) ?? new Set<KeyState>();
      this.#slotKeys.set(slot, keys);
      keys.add(state);
      return this.#grant(state);
    } finally {
      this.#waiting--;
      state.busy = false;
      this.#drain(state);
    }
  }

  /**
   * A try-lock on a session that is not waiting; if refused and `wait`, a server-side wait on a
   * session that holds nothing. When the session rules allow no wait now (every other session
   * already waits), it polls with try-locks, backing off to 250 ms.
   */
  async #takeOnServer(
    key: LockKey,
    mode: LockMode,
    wait: boolean,
    signal: AbortSignal,
    holding: readonly HeldLock[],
  ): Promise<Slot | undefined> {
    // When an idle session may wait, wait right away: a free key is granted at once, and a busy one
    // is handed over by the server without the round trip of a try-lock first.
    const idle = wait ? await this.#sessions.forWait({ open: false }) : undefined;
    if (idle) {
      try {
        await this.#waitOnServer(idle, key, mode, signal, holding);
        idle.held++;
        if (!idle.session.isLost) return idle;
      } catch (error) {
        if (!retryable(idle, error, signal)) throw error;
      } finally {
        this.#sessions.done(idle);
      }
    }
    for (let delay = 5; ; delay = Math.min(delay * 2, 250)) {
      const slot = await this.#sessions.forShortStatement(signal);
      let granted: boolean;
      try {
        granted = await tryLock(slot.session, key, mode, signal);
        if (granted) slot.held++;
      } catch (error) {
        if (retryable(slot, error, signal)) continue;
        throw error;
      } finally {
        this.#sessions.done(slot);
      }
      // A grant on a session that ended in the meantime is no grant: try again.
      if (granted) {
        if (slot.session.isLost) continue;
        return slot;
      }
      if (!wait) return undefined;
      const waitSlot = await this.#sessions.forWait({ signal });
      if (waitSlot) {
        try {
          await this.#waitOnServer(waitSlot, key, mode, signal, holding);
          waitSlot.held++;
        } catch (error) {
          if (retryable(waitSlot, error, signal)) continue;
          throw error;
        } finally {
          this.#sessions.done(waitSlot);
        }
        if (waitSlot.session.isLost) continue;
        return waitSlot;
      }
      await sleep(delay, signal);
    }
  }

  #grant(state: KeyState): Holder {
    const holder = new Holder(this, state);
    state.holders.add(holder);
    return holder;
  }

  /** Lets queued requests proceed: shared ones join shared holders; the head goes to the server when the key is free. */
  #drain(state: KeyState) {
    while (state.queue.length > 0 && !state.busy) {
      const head = state.queue[0] as Queued;
      if (head.mode === "shared" && state.mode === "shared" && state.holders.size > 0) {
        state.queue.shift();
        head.resolve(this.#grant(state));
        continue;
      }
      if (state.holders.size > 0) break;
      state.queue.shift();
      head.dequeued();
      this.#acquireOnServer(state, head.mode, true, head.signal, head.holding).then(head.resolve, head.reject);
    }
    this.#forgetIfUnused(state);
  }

  #forgetIfUnused(state: KeyState) {
    if (state.holders.size === 0 && !state.busy && state.queue.length === 0 && state.slot === undefined) {
      this.#keys.delete(state.key.identity);
    }
  }

  /** Frees a released holder's level: on the server once the Locker's last holder of the key is gone. */
  async free(holder: Holder, state: KeyState): Promise<void> {
    state.holders.delete(holder);
    if (state.holders.size > 0) return;
    await this.#freeOnServer(state);
  }

  /**
   * Every session listens for `pglock release` (sql/notify.ts) from its opening, before its first use:
   * the request names the session's backend pid and the key. Listening costs nothing while idle, and
   * no extra connection. Without LISTEN (a pooler in transaction mode) the key can still be freed with
   * --force.
   */
  async #listenForRevocations(session: Session): Promise<void> {
    session.onNotification((channel, payload) => {
      if (channel !== REVOKE_CHANNEL) return;
      const revocation = parseRevocation(payload);
      if (revocation?.pid === session.backendPid) this.#revoke(session, revocation.identity);
    });
    await session.listen(listenForRevocations(), unlistenRevocations());
  }

  /** An operator asked for the key: its holders are told (RevokedError) and the key is freed. */
  #revoke(session: Session, identity: string) {
    const state = this.#keys.get(identity);
    if (!state || state.slot?.session !== session || state.holders.size === 0 || state.busy) return;
    this.#loseHolders(state, new RevokedError(state.key.toString()));
    this.#freeOnServer(state).catch(() => {});
  }

  async #freeOnServer(state: KeyState): Promise<void> {
    const slot = state.slot as Slot;
    const mode = state.mode as LockMode;
    state.busy = true;
    this.#sessions.use(slot);
    try {
      await releaseLevel(slot.session, state.key, mode);
    } catch (error) {
      // A session that ended released the lock with it: what the caller asked for is true.
      if (!slot.session.isLost) throw lockError(error, state.key);
    } finally {
      slot.held--;
      this.#slotKeys.get(slot)?.delete(state);
      state.slot = undefined;
      state.mode = undefined;
      state.busy = false;
      this.#sessions.done(slot);
      this.#drain(state);
    }
  }

  #onSessionLost(slot: Slot, reason: unknown) {
    const states = this.#slotKeys.get(slot);
    this.#slotKeys.delete(slot);
    if (!states) return;
    for (const state of states) {
      this.#loseHolders(state, sessionEndedError(state.key, reason));
      state.slot = undefined;
      state.mode = undefined;
      this.#drain(state);
    }
  }

  #loseHolders(state: KeyState, error: LockLostError) {
    for (const holder of [...state.holders]) holder.lose(error);
    state.holders.clear();
  }
}

/** A held advisory lock: one of the Locker's holders of a key it holds on one session. */
class Holder extends Handle {
  readonly #backend: AdvisoryBackend;
  readonly #state: KeyState;

  constructor(backend: AdvisoryBackend, state: KeyState) {
    super(backend, state.key, state.mode === "shared");
    this.#backend = backend;
    this.#state = state;
  }

  protected override freeOnServer(): Promise<void> {
    return this.#backend.free(this, this.#state);
  }

  protected override onLost(): void {
    // The session's end (or close()) frees it on the server: only the Locker's own record is left.
    this.#state.holders.delete(this);
  }

  protected override backendPid(): number | undefined {
    return this.#state.slot?.session.backendPid;
  }

  /** The backend pid of the session that holds the lock. */
  get sessionPid(): number | undefined {
    return this.backendPid();
  }
}
/** The locks of `holding` held on the server, as the sessions that hold them and their keys. */
function serverHolds(holding: readonly HeldLock[]): { pid: number; key: LockKey }[] {
  const holds: { pid: number; key: LockKey }[] = [];
  for (const held of holding) {
    const pid = held.backendPid();
    if (pid !== undefined) holds.push({ pid, key: held.key });
  }
  return holds;
}

function retryable(slot: Slot, error: unknown, signal: AbortSignal): boolean {
  return !signal.aborted && slot.session.isLost && error instanceof ConnectionError;
}
