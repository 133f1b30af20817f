/**
 * What the calling task holds. A deadlock, or a task waiting for itself, is a fact about a task: the
 * code that holds one lock while it waits for another. A Locker or a process is not a task: two
 * independent callers of one Locker hold and wait without waiting for each other (issue #23). pglock
 * knows what a task holds in two ways only:
 * - `withLock` and `tryWithLock` run their callback in an AsyncLocalStorage context that records the
 *   handle, so an acquire inside the callback is a wait by the holder (and nested calls add up);
 * - the caller says so: `acquire(key, { holding: [handle] })`.
 * Nothing is ever inferred from the Locker or the process. https://nodejs.org/api/async_context.html
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { AlreadyHeldError, InvalidArgumentError } from "../errors.js";
import { describe, type LockKey, type LockMode } from "../key.js";
import type { LockHandle } from "./handle.js";

/** A lock a task holds, as the deadlock check and the re-entrancy rule see it. */
export interface HeldLock {
  /** The Locker (or Lock) that granted it. */
  readonly owner: object;
  readonly key: LockKey;
  readonly shared: boolean;
  readonly handle: LockHandle;
  /** Not released, not lost. */
  isHeld(): boolean;
  /** The server session (backend pid) holding it while held; undefined for leases and the memory double. */
  backendPid(): number | undefined;
}

const registry = new WeakMap<object, HeldLock | (() => readonly HeldLock[])>();
const context = new AsyncLocalStorage<readonly HeldLock[]>();

/** Makes `handle` usable in a task context and in `holding` lists. */
export function registerHeld(handle: object, held: HeldLock | (() => readonly HeldLock[])): void {
  registry.set(handle, held);
}

function heldOf(value: unknown): readonly HeldLock[] | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const held = registry.get(value);
  if (held === undefined) return undefined;
  return typeof held === "function" ? held() : [held];
}

/** Runs `fn` as a task that holds `held` besides what the calling task holds. */
export function runHolding<T>(held: readonly HeldLock[], fn: () => T): T {
  const outer = context.getStore() ?? [];
  return context.run([...outer, ...held], fn);
}

/** What an acquire's caller holds: the explicit `holding` option, else the task context. */
export function holdingOf(explicit: unknown, where: string): readonly HeldLock[] {
  if (explicit === undefined) return (context.getStore() ?? []).filter((held) => held.isHeld());
  if (!Array.isArray(explicit)) {
    throw new InvalidArgumentError(
      `${where}: options.holding must be an array of lock handles (or groups) the task holds, got ${describe(explicit)}`,
    );
  }
  const all: HeldLock[] = [];
  for (const item of explicit) {
    const held = heldOf(item);
    if (!held) {
      throw new InvalidArgumentError(
        `${where}: options.holding must hold only handles or groups that pglock granted, got ${describe(item)}`,
      );
    }
    all.push(...held.filter((one) => one.isHeld()));
  }
  return all;
}

/**
 * The same task taking a key it already holds on the same Locker would wait for itself forever. By
 * default that fails at once with {@link AlreadyHeldError}. With `reentrant`, it is one more level of
 * the lock it holds: a handle whose release does nothing on the server, sharing the held lock's
 * signal; the lock is released when the outermost level is. A shared level inside an exclusive lock
 * is allowed (exclusive already excludes everyone else); an exclusive level inside a shared lock is
 * refused even then, since others may share the key and the upgrade would wait for them.
 */
export function reenter(
  holding: readonly HeldLock[],
  owner: object,
  key: LockKey,
  mode: LockMode,
  reentrant: boolean,
  where: string,
): LockHandle | undefined {
  const outer = holding.find((held) => held.owner === owner && held.key.identity === key.identity);
  if (!outer) return undefined;
  if (!reentrant) {
    throw new AlreadyHeldError(
      key.toString(),
      `${where}: this task already holds lock ${key}${outer.shared ? " (shared)" : ""}, so it would wait for itself; ` +
        "use the handle it holds, or pass { reentrant: true } to take one more level of it",
    );
  }
  if (mode === "exclusive" && outer.shared) {
    throw new AlreadyHeldError(
      key.toString(),
      `${where}: this task holds lock ${key} shared and asks for it exclusively: an upgrade would wait for itself ` +
        "and for every other shared holder; take it exclusively from the start",
    );
  }
  return levelOf(outer);
}

/** One more level of a held lock: releasing it does nothing on the server. */
function levelOf(outer: HeldLock): LockHandle {
  const inner = outer.handle;
  let released = false;
  const level: LockHandle = {
    get key() {
      return inner.key;
    },
    get shared() {
      return inner.shared;
    },
    get signal() {
      return inner.signal;
    },
    get fencingToken() {
      return inner.fencingToken;
    },
    release: async () => {
      released = true;
    },
    [Symbol.asyncDispose]: async () => {
      released = true;
    },
  };
  // A lease's level extends the lease it is a level of.
  const extend = (inner as { extend?: (ms: number) => Promise<void> }).extend;
  if (extend) Object.assign(level, { extend: (ms: number) => extend.call(inner, ms) });
  registerHeld(level, { ...outer, handle: level, isHeld: () => !released && outer.isHeld() });
  return level;
}

/** The held locks a handle or group stands for (empty for anything else). */
export function heldLocksOf(handle: object): readonly HeldLock[] {
  return heldOf(handle) ?? [];
}
