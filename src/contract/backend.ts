/**
 * What a Locker's backend does: the one thing that differs between advisory sessions, leases and the
 * in-memory double. The façade (locker/facade.ts) does everything around it.
 */
import type { LockKey, LockMode } from "../key.js";
import type { Handle } from "./base-handle.js";
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
  /** Wake-ups for the Locker's semaphores. */
  readonly wakeups: Wakeups;
  /** Connections held now, and requests not yet granted. */
  stats(): { sessions: number; waiting: number };
  /**
   * Gives everything back. Called once, after the façade has refused new calls, waited for the calls
   * in flight and lost every handle still held.
   */
  close(): Promise<void>;
}
