import { setMaxListeners } from "node:events";

/**
 * One AbortSignal that aborts when any of several does, with a dispose() that removes the listeners
 * it added. (AbortSignal.any keeps long-lived source signals referencing every derived signal on
 * Node 20: https://github.com/nodejs/node/issues/48951.)
 */
export interface LinkedSignal {
  readonly signal: AbortSignal;
  dispose(): void;
}

export function linkSignals(...sources: (AbortSignal | undefined)[]): LinkedSignal {
  const present = sources.filter((s): s is AbortSignal => s !== undefined);
  // One source needs no new signal: EventTarget work is a measurable part of a lock's cost.
  if (present.length === 1) return { signal: present[0] as AbortSignal, dispose() {} };
  const controller = new AbortController();
  const already = present.find((s) => s.aborted);
  if (already) {
    controller.abort(already.reason);
    return { signal: controller.signal, dispose() {} };
  }
  const listeners = present.map((source) => {
    const listener = () => {
      controller.abort(source.reason);
      dispose();
    };
    source.addEventListener("abort", listener, { once: true });
    return [source, listener] as const;
  });
  function dispose() {
    for (const [source, listener] of listeners) source.removeEventListener("abort", listener);
  }
  return { signal: controller.signal, dispose };
}

/** A signal that aborts with `reason` after `ms`; dispose() clears the timer. */
export function timeoutSignal(ms: number, reason: () => unknown): LinkedSignal {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(reason()), ms);
  return { signal: controller.signal, dispose: () => clearTimeout(timer) };
}

/**
 * An AbortController whose signal every pending call of a Lock or Locker listens to: thousands of
 * listeners at once are expected there, not a leak, so Node's warning is turned off for it.
 */
export function sharedController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}

/**
 * `promise`, or a rejection with `signal.reason` as soon as the signal aborts, for work that cannot
 * be cancelled (taking a connection). What the promise yields after the abort goes to `late`, so the
 * caller can give it back; a failure after the abort (of the promise or of `late`) is nobody's concern.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, late: (value: T) => unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      promise.then(late).catch(() => {});
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Resolves after `ms`; rejects with `signal.reason` as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A wake-up that is not lost when it comes before the wait: the next wait returns at once. */
export class Wake {
  #pending = false;
  #resolve: (() => void) | undefined;

  wake() {
    this.#pending = true;
    this.#resolve?.();
  }

  /** Resolves on a wake, after `ms`, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.#pending || signal?.aborted) {
      this.#pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.#resolve = undefined;
        this.#pending = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
      this.#resolve = done;
    });
  }
}
