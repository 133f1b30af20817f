/**
 * What a Locker's backend does: the one thing that differs between advisory sessions, leases and the
 * in-memory double. The façade (locker/facade.ts) does everything around it.
 */
import type { LockKey, LockMode } from "../key.js";
import type { Handle } from "./base-handle.js";
import type { LockHandle } from "./handle.js";
import type { HeldLock } from "./task.js";

/** One request for a key, after the façade checked it. */
export interface LockRequest {
  readonly key: LockKey;
  readonly mode: LockMode;
  /** The locks the calling task holds while it waits (task.ts): what the deadlock check may follow. */
  readonly holding: readonly HeldLock[];
}

/** Wake-ups between waiters and releasers: across processes (LISTEN/NOTIFY), in one process, or in memory. */
export interface Wakeups {
  /** Calls `wake` on every notify of `topic`; resolves once listening, with the function that stops it. */
  subscribe(topic: string, wake: () => void): Promise<() => void>;
  notify(topic: string): Promise<void>;
}

/** Who leads an election (patterns/leader.ts), as its record on the server says. */
export interface Leadership {
  /** Who leads: the host, process and Locker of the leader (or the owner it gave). */
  readonly owner: string;
  /** What the leader published with its term (an address, say); null when it gave none. */
  readonly payload: unknown;
  /** The term: the fencing token of the leader's grant. Later terms have larger tokens. */
  readonly term: bigint;
  /** When the term began, by the server's clock. */
  readonly since: Date;
}

/** Where an election keeps its record: the lease table for the server Lockers, memory for the double. */
export interface Leaderboard {
  /** Whether a campaign waits for the key on the server (session locks) or polls for it (leases). */
  readonly waitsOnServer: boolean;
  /**
   * Records `handle`'s holder as the leader of its key in term `term`, for `termMs` on the server's
   * clock. False when a later term is recorded already.
   */
  proclaim(
    handle: LockHandle,
    record: { owner: string; payload: unknown },
    term: bigint,
    termMs: number,
  ): Promise<boolean>;
  /** Extends term `term` by `termMs`; false when it ran out or was replaced. */
  renew(key: LockKey, term: bigint, termMs: number): Promise<boolean>;
  /** Ends term `term` now. */
  resign(key: LockKey, term: bigint): Promise<void>;
  /** The leader of `key` now: a record whose term is alive and whose holder holds the key; null otherwise. */
  read(key: LockKey): Promise<Leadership | null>;
  /** Takes the key from a leader whose term ran out without renewal (a frozen process); true if it did. */
  depose(key: LockKey): Promise<boolean>;
}

export interface LockBackend<H extends Handle> {
  /**
   * Takes the key: at once if it is free, else waits while `wait` until it is granted (resolves the
   * handle) or `signal` aborts (rejects with its reason). Resolves undefined when it is not free and
   * `wait` is false. A grant that races an abort is released, never handed out and never kept.
   */
  request(request: LockRequest, wait: boolean, signal: AbortSignal): Promise<H | undefined>;
  /** Gives a granted exclusive handle its fencing token; releases the handle if that fails. */
  fence(handle: H): Promise<void>;
  /**
   * Records, on the server's clock, that the key stays taken until `atLeastMs` from now, unless a run
   * recorded earlier keeps it taken still. Resolves undefined when recorded, or how many ms the earlier
   * run keeps the key. Called while `handle` holds the key.
   */
  reserve(handle: H, atLeastMs: number): Promise<number | undefined>;
  /**
   * Who holds each of `keys` now, in every process, as the server sees it: one entry per holder, named
   * by its owner (host:pid@nonce and Locker, when known) or its backend pid or lease holder id.
   */
  holdersOf(keys: readonly LockKey[]): Promise<{ key: LockKey; holder: string }[]>;
  /** Wake-ups for the Locker's semaphores and elections. */
  readonly wakeups: Wakeups;
  /** Where the Locker's elections keep their records. */
  readonly leaders: Leaderboard;
  /** Connections held now, and requests not yet granted. */
  stats(): { sessions: number; waiting: number };
  /**
   * Gives everything back. Called once, after the façade has refused new calls, waited for the calls
   * in flight and lost every handle still held.
   */
  close(): Promise<void>;
}
