/** The calls of a Locker still running, so that close() can wait for every one to settle. */
export class PendingCalls {
  readonly #calls = new Set<Promise<unknown>>();

  /** Tracks `call` until it settles; returns it unchanged. */
  track<T>(call: Promise<T>): Promise<T> {
    const settled: Promise<unknown> = call.then(
      () => this.#calls.delete(settled),
      () => this.#calls.delete(settled),
    );
    this.#calls.add(settled);
    return call;
  }

  /** Resolves once every call tracked now has settled. */
  async settled(): Promise<void> {
    await Promise.allSettled(this.#calls);
  }

  /** Resolves once no call is left, including calls tracked while waiting. */
  async drained(): Promise<void> {
    while (this.#calls.size > 0) await Promise.allSettled(this.#calls);
  }
}

/** Resolves when `work` settles or after `ms`, whichever is first; never rejects. */
export async function settleWithin(ms: number, work: Promise<unknown>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    work.catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      (timer as { unref?: () => void }).unref?.();
    }),
  ]);
  clearTimeout(timer);
}
