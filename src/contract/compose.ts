/**
 * What every Locker does the same way, whatever its backend: the checks on an acquire's arguments,
 * running a callback as a task that holds a lock, and all-or-nothing sets of locks.
 */
import { ClosedError, InvalidArgumentError, LockTimeoutError } from "../errors.js";
import { describe, type LockKey, type LockKeyInput, type LockMode, lockKey } from "../key.js";
import { linkSignals, timeoutSignal } from "../signals.js";
import { checkBoolean, checkInteger, checkMs, checkSignal, optionsObject } from "../validate.js";
import type { LockHandle } from "./handle.js";
import type { AcquireAllOptions, RunLengthOptions, TaskOptions } from "./options.js";
import { type HeldLock, heldLocksOf, holdingOf, reenter, registerHeld, runHolding } from "./task.js";

export interface AcquireArguments {
  key: LockKey;
  mode: LockMode;
  signal: AbortSignal | undefined;
  timeout: number | undefined;
  fencing: boolean;
  /** The locks the calling task holds (task.ts). */
  holding: readonly HeldLock[];
  /** A level of a lock the task holds already (`reentrant`): the call's answer, with no server work. */
  level: LockHandle | undefined;
  /** RunLengthOptions, 0 when not given. */
  atLeastMs: number;
  atMostMs: number;
}

/** The longest run length: one day (timers past 2^31 - 1 ms fire at once). */
const MAX_RUN_MS = 86_400_000;

/** The checks every Locker runs on acquire/tryAcquire arguments, before anything else happens. */
export function parseAcquire(
  where: "acquire" | "tryAcquire",
  key: LockKeyInput,
  options: { shared?: boolean; timeout?: number; signal?: AbortSignal; fencing?: boolean } & TaskOptions &
    RunLengthOptions,
  closed: boolean,
  locker: { owner: object; reentrant: boolean },
): AcquireArguments {
  optionsObject(
    options,
    where,
    where === "acquire"
      ? ["shared", "timeout", "signal", "fencing", "holding", "reentrant", "atLeastMs", "atMostMs"]
      : ["shared", "signal", "holding", "reentrant", "atLeastMs", "atMostMs"],
  );
  const normalized = lockKey(key);
  const shared = checkBoolean(options.shared, where, "shared") ?? false;
  const timeout = where === "acquire" ? checkMs(options.timeout, where, "timeout") : undefined;
  const signal = checkSignal(options.signal, where);
  const fencing = where === "acquire" ? (checkBoolean(options.fencing, where, "fencing") ?? false) : false;
  if (fencing && shared) {
    throw new InvalidArgumentError("acquire: options.fencing needs an exclusive lock: a token orders single holders");
  }
  const atLeastMs = checkInteger(options.atLeastMs, where, "options.atLeastMs", 0, MAX_RUN_MS) ?? 0;
  const atMostMs = checkInteger(options.atMostMs, where, "options.atMostMs", 0, MAX_RUN_MS) ?? 0;
  if ((atLeastMs > 0 || atMostMs > 0) && shared) {
    throw new InvalidArgumentError(
      `${where}: options.atLeastMs and atMostMs need an exclusive lock: they bound one run`,
    );
  }
  if (atMostMs > 0 && atLeastMs > atMostMs) {
    throw new InvalidArgumentError(
      `${where}: options.atLeastMs (${atLeastMs}) must not exceed atMostMs (${atMostMs}): the key could not stay taken longer than it may be held`,
    );
  }
  const reentrant = checkBoolean(options.reentrant, where, "reentrant") ?? locker.reentrant;
  const holding = holdingOf(options.holding, where);
  if (closed) throw new ClosedError("the Locker");
  signal?.throwIfAborted();
  const mode = shared ? "shared" : "exclusive";
  const level = reenter(holding, locker.owner, normalized, mode, reentrant, where);
  if (level && (atLeastMs > 0 || atMostMs > 0)) {
    throw new InvalidArgumentError(
      `${where}: the task holds lock ${normalized} already: a level of it cannot have its own atLeastMs or atMostMs`,
    );
  }
  return { key: normalized, mode, signal, timeout, fencing, holding, level, atLeastMs, atMostMs };
}

export function checkFn(fn: unknown, where: string): void {
  if (typeof fn !== "function") throw new InvalidArgumentError(`${where}: fn must be a function, got ${describe(fn)}`);
}

/**
 * Takes every key or none, in one canonical order, within one timeout; `acquire` takes one key.
 */
export async function acquireAll(
  keys: readonly LockKeyInput[],
  options: AcquireAllOptions,
  acquire: (
    key: LockKey,
    options: { shared: boolean; signal: AbortSignal; holding: readonly (LockHandle | LockGroup)[] },
  ) => Promise<LockHandle>,
): Promise<LockGroup> {
  if (!Array.isArray(keys)) throw new InvalidArgumentError(`acquireAll: keys must be an array, got ${describe(keys)}`);
  optionsObject(options, "acquireAll", ["shared", "timeout", "signal", "holding"]);
  const normalized = keys.map((key) => lockKey(key)).sort(compareKeys);
  for (let i = 1; i < normalized.length; i++) {
    if ((normalized[i] as LockKey).identity === (normalized[i - 1] as LockKey).identity) {
      throw new InvalidArgumentError(`acquireAll: key ${normalized[i]} appears twice: it would wait for itself`);
    }
  }
  const timeout = checkMs(options.timeout, "acquireAll", "timeout");
  const deadline =
    timeout === undefined
      ? undefined
      : timeoutSignal(timeout, () => new LockTimeoutError(normalized.join(", "), timeout));
  const signal = checkSignal(options.signal, "acquireAll");
  // The group is a task that holds its first keys while it waits for the next ones.
  const held = holdingOf(options.holding, "acquireAll").map((one) => one.handle);
  const linked = linkSignals(signal, deadline?.signal);
  const handles: LockHandle[] = [];
  try {
    for (const key of normalized) {
      const holding = [...held, ...handles];
      handles.push(await acquire(key, { shared: options.shared ?? false, signal: linked.signal, holding }));
    }
    return new LockGroup(handles);
  } catch (error) {
    await Promise.allSettled(handles.map((handle) => handle.release()));
    throw error;
  } finally {
    linked.dispose();
    deadline?.dispose();
  }
}

/**
 * Runs `fn` holding `handle`, as a task that holds it (task.ts), releases in every path, and reports
 * a loss that happened before `fn` settled.
 */
export async function runHeld<T>(handle: LockHandle, fn: (signal: AbortSignal) => Promise<T> | T): Promise<T> {
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: await runHolding(heldLocksOf(handle), () => fn(handle.signal)) };
  } catch (error) {
    outcome = { ok: false, error };
  }
  const lost = handle.signal.aborted;
  try {
    await handle.release();
  } catch (error) {
    if (outcome.ok && !lost) throw error;
  }
  if (lost) throw handle.signal.reason;
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}

/** int64 keys ascending, then pairs ascending: one total order every caller agrees on. */
function compareKeys(a: LockKey, b: LockKey): number {
  if (a.pair && b.pair) return a.pair[0] - b.pair[0] || a.pair[1] - b.pair[1];
  if (a.pair) return 1;
  if (b.pair) return -1;
  return a.id === b.id ? 0 : (a.id as bigint) < (b.id as bigint) ? -1 : 1;
}

/** Several locks taken together by a Locker's `acquireAll`; released together. */
export class LockGroup implements AsyncDisposable {
  /** The handles, in the order they were taken. */
  readonly handles: readonly LockHandle[];
  readonly #lost = new AbortController();
  #released: Promise<void> | undefined;

  constructor(handles: LockHandle[]) {
    this.handles = handles;
    registerHeld(this, () => handles.flatMap((handle) => heldLocksOf(handle)));
    const linked = linkSignals(...handles.map((handle) => handle.signal));
    linked.signal.addEventListener("abort", () => this.#lost.abort(linked.signal.reason), { once: true });
  }

  /** The keys, in the order they were taken. */
  get keys(): LockKey[] {
    return this.handles.map((handle) => handle.key);
  }

  /** Aborted with a `LockLostError` when any of the locks is lost. */
  get signal(): AbortSignal {
    return this.#lost.signal;
  }

  /** Releases every lock (in reverse order). Idempotent. */
  release(): Promise<void> {
    this.#released ??= (async () => {
      const results = await Promise.allSettled([...this.handles].reverse().map((handle) => handle.release()));
      const failed = results.find((result) => result.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
    })();
    return this.#released;
  }

  /** `await using group = await locker.acquireAll(…)` releases it when the block ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}
