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
}
