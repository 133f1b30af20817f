// The contract every Locker keeps: one set of behavioural cases, run against the session Locker on
// each driver, the lease Locker on each driver (directly and through PgBouncer in transaction pooling)
// and the in-memory test double, so that none of them can drift from what the others do.

import { subscribe, unsubscribe } from "node:diagnostics_channel";
import type pg from "pg";
import {
  AlreadyHeldError,
  type AnyLocker,
  ClosedError,
  channels,
  createLeaseLocker,
  InvalidArgumentError,
  InvalidLockKeyError,
  LockExpiredError,
  LockLostError,
  LockTimeoutError,
  type PoolDatabase,
  type QueryFunction,
} from "pglock";
import { afterEach, expect, it } from "vitest";
import { eventually, sleep, uniqueKey, uniqueName } from "./db.js";
import { expireLeases } from "./leases.js";

export interface Implementation {
  /** Lockers that contend with each other, as separate processes would. */
  make(): AnyLocker;
  /** Ends the session(s) behind `locker`'s locks, or lets its leases expire. */
  lose(locker: AnyLocker): Promise<void>;
  cleanup(): Promise<void>;
}

/**
 * Lease Lockers that share one database handle per test (leases keep no session, so sharing changes
 * nothing), renewing every 100 ms. A loss is the expiry of their leases on the server (what a process
 * that stalled past its TTL finds), written through `admin`. Where leases differ: a waiter in another
 * Locker is granted at its next poll, not by the server's queue; the cases hold for both because they
 * bound waits generously.
 */
export function leaseLockers(
  open: () => { db: PoolDatabase | QueryFunction; end(): Promise<void> },
  admin: () => pg.Pool,
): () => Implementation {
  return () => {
    const made: [AnyLocker, string][] = [];
    let handle: ReturnType<typeof open> | undefined;
    return {
      make() {
        const app = uniqueName();
        handle ??= open();
        const locker = createLeaseLocker(handle.db, { applicationName: app, ttlMs: 5_000, renewEveryMs: 100 });
        made.push([locker, app]);
        return locker;
      },
      async lose(locker) {
        await expireLeases(admin(), made.find(([l]) => l === locker)?.[1] as string);
      },
      async cleanup() {
        await Promise.all(made.map(([locker]) => locker.close()));
        await handle?.end();
      },
    };
  };
}

/** Defines the contract's cases (inside a describe) for the Lockers `implementation` makes. */
export function contractCases(implementation: () => Implementation): void {
  let impl: Implementation;
  afterEach(async () => {
    await impl?.cleanup();
  });
  const setup = () => {
    impl = implementation();
    return impl;
  };

  it("exclusive excludes everyone, in the same Locker and in another", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const held = await a.acquire(key);
    expect(await a.tryAcquire(key)).toBeNull();
    expect(await b.tryAcquire(key)).toBeNull();
    expect(await b.tryAcquire(key, { shared: true })).toBeNull();
    await held.release();
    await held.release();
    const again = await b.tryAcquire(key);
    expect(again).not.toBeNull();
    await again?.release();
  });

  it("shared coexists with shared; a waiting exclusive is granted when the last shared goes", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const s1 = await a.acquire(key, { shared: true });
    const s2 = await b.acquire(key, { shared: true });
    expect(s1.shared && s2.shared).toBe(true);
    let granted = false;
    const exclusive = a.acquire(key, { timeout: 10_000 }).then((h) => {
      granted = true;
      return h;
    });
    await sleep(50);
    await s1.release();
    await sleep(50);
    expect(granted).toBe(false);
    await s2.release();
    await (await exclusive).release();
  });

  it("a timeout rejects with LockTimeoutError; an abort with its reason; neither leaves a lock", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const held = await a.acquire(key);
    const error = await b.acquire(key, { timeout: 50 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect((error as LockTimeoutError).timeoutMs).toBe(50);
    const controller = new AbortController();
    const waiting = b.acquire(key, { signal: controller.signal });
    const reason = new Error("stop");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    await expect(b.acquire(key, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(b.stats()).toMatchObject({ held: 0, waiting: 0 });
    await held.release();
    const next = await b.acquire(key, { timeout: 5_000 });
    await next.release();
  });

  it("withLock returns the value and releases in every path; tryWithLock runs only when free", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    expect(await a.withLock(key, async () => 7)).toBe(7);
    await expect(a.withLock(key, () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    const held = await b.acquire(key);
    expect(await a.tryWithLock(key, () => 1)).toEqual({ acquired: false });
    await held.release();
    expect(await a.tryWithLock(key, () => 1)).toEqual({ acquired: true, value: 1 });
    expect(a.stats().held).toBe(0);
  });

  it("loss aborts the handle's signal with LockLostError, withLock rejects, and the key is free for others", async () => {
    const { make, lose } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const handle = await a.acquire(key);
    await lose(a);
    await eventually(() => handle.signal.aborted);
    expect(handle.signal.reason).toBeInstanceOf(LockLostError);
    await handle.release();
    const other = await b.acquire(key, { timeout: 5_000 });
    await other.release();
    const result = a.withLock(uniqueKey(), async (signal) => {
      await lose(a);
      await eventually(() => signal.aborted);
      return "finished anyway";
    });
    await expect(result).rejects.toBeInstanceOf(LockLostError);
  });

  it("close() rejects pending acquires with ClosedError and later calls too", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const held = await b.acquire(key);
    const mine = await a.acquire(uniqueKey());
    let settled = false;
    const pending = a.acquire(key).catch((error: unknown) => error); // handled at once: it rejects during close()
    void pending.then(() => {
      settled = true;
    });
    await eventually(() => a.stats().waiting === 1);
    await a.close();
    // close() waits for the calls in flight (issue #24: the memory double's did not).
    await Promise.resolve();
    expect(settled).toBe(true);
    expect(await pending).toBeInstanceOf(ClosedError);
    expect(mine.signal.reason).toBeInstanceOf(LockLostError);
    await expect(a.acquire(1)).rejects.toBeInstanceOf(ClosedError);
    await held.release();
  });

  it("publishes acquire start and end, acquired, released and lost events for its handles", async () => {
    const { make, lose } = setup();
    const events: [string, { key: { identity: string }; handle?: object; outcome?: string }][] = [];
    const listeners = Object.values(channels).map((name) => {
      const listener = (message: unknown) => events.push([name, message as (typeof events)[number][1]]);
      subscribe(name, listener);
      return [name, listener] as const;
    });
    try {
      const locker = make();
      const [key, other] = [uniqueKey(), uniqueKey()];
      const handle = await locker.acquire(key);
      await handle.release();
      const kept = await locker.acquire(other);
      await lose(locker);
      await eventually(() => kept.signal.aborted);
      const named = (k: bigint) => events.filter(([, message]) => message.key.identity === String(k));
      expect(named(key).map(([name]) => name)).toEqual([
        "pglock:acquire:start",
        "pglock:acquired",
        "pglock:acquire:end",
        "pglock:released",
      ]);
      expect(named(key)[1]?.[1].handle).toBe(handle);
      // One object per call: the start event, completed with the outcome when the call ends.
      expect(named(key)[2]?.[1]).toBe(named(key)[0]?.[1]);
      expect(named(key)[2]?.[1]).toMatchObject({ outcome: "granted" });
      expect(named(other).map(([name]) => name)).toContain("pglock:lost");
      expect(named(other).find(([name]) => name === "pglock:lost")?.[1].handle).toBe(kept);
    } finally {
      for (const [name, listener] of listeners) unsubscribe(name, listener);
    }
  });

  it("atLeastMs keeps the key taken after the holder released and its Locker closed, until the run's time is up", async () => {
    const { make } = setup();
    const [a, b, c] = [make(), make(), make()];
    const key = uniqueKey();
    const grantedAt = performance.now();
    // A job far shorter than the spread of its replicas' timers: it runs once, not once per replica.
    expect(await a.tryWithLock(key, () => "ran", { atLeastMs: 1500 })).toEqual({ acquired: true, value: "ran" });
    await a.close(); // the process that ran it may exit at once: the run's record is not in it
    expect(await b.tryWithLock(key, () => "twice", { atLeastMs: 1500 })).toEqual({ acquired: false });
    expect(await b.tryAcquire(key, { atLeastMs: 1500 })).toBeNull();
    await expect(b.acquire(key, { atLeastMs: 1500, timeout: 0 })).rejects.toBeInstanceOf(LockTimeoutError);
    // A waiting acquire is granted once the run's time is up, and records a run of its own.
    const next = await c.acquire(key, { atLeastMs: 1500, timeout: 10_000 });
    expect(performance.now() - grantedAt).toBeGreaterThan(1_200);
    await next.release();
    expect(await b.tryAcquire(key, { atLeastMs: 1500 })).toBeNull();
  });

  it("atMostMs takes the key from a holder that never lets go: LockExpiredError, and others get it", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const stuck = await a.acquire(key, { atMostMs: 400 });
    const waiter = b.acquire(key, { timeout: 10_000 });
    await eventually(() => stuck.signal.aborted);
    expect(stuck.signal.reason).toBeInstanceOf(LockExpiredError);
    expect(stuck.signal.reason).toBeInstanceOf(LockLostError);
    expect(stuck.signal.reason).toMatchObject({ code: "ERR_PGLOCK_EXPIRED", atMostMs: 400 });
    const next = await waiter;
    expect(a.stats().held).toBe(0);
    await stuck.release(); // the holder's late release changes nothing
    expect(await a.tryAcquire(key)).toBeNull();
    await next.release();
    // withLock reports it: the callback's work was not protected to the end.
    const ran = a.withLock(key, (signal) => new Promise((resolve) => signal.addEventListener("abort", resolve)), {
      atMostMs: 300,
    });
    await expect(ran).rejects.toBeInstanceOf(LockExpiredError);
    // A run that ends in time keeps its signal quiet.
    const quick = await a.acquire(key, { atMostMs: 300 });
    await quick.release();
    await sleep(400);
    expect(quick.signal.aborted).toBe(false);
  });

  it("fencing tokens strictly increase per key; acquireAll is all or nothing", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueName("fenced");
    const first = await a.acquire(key, { fencing: true });
    await first.release();
    const second = await b.acquire(key, { fencing: true });
    expect((second.fencingToken as bigint) > (first.fencingToken as bigint)).toBe(true);
    const blocker = uniqueKey();
    const other = uniqueKey();
    const group = await a.acquireAll([other, blocker]);
    await expect(b.acquireAll([blocker, uniqueKey()], { timeout: 50 })).rejects.toBeInstanceOf(LockTimeoutError);
    await group.release();
    await second.release();
  });

  it("a semaphore admits at most `permits`; an election has one leader", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const name = uniqueName("sem");
    const s1 = await a.semaphore(name, 2).acquire();
    const s2 = await b.semaphore(name, 2).acquire();
    expect(await a.semaphore(name, 2).tryAcquire()).toBeNull();
    await s1.release();
    const s3 = await b.semaphore(name, 2).acquire({ timeout: 5_000 });
    await Promise.all([s2.release(), s3.release()]);
    const election = uniqueName("election");
    const [ea, eb] = [a.leaderElection(election), b.leaderElection(election)];
    const stop = new AbortController();
    const runs = [ea, eb].map((e) =>
      e.run((signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())), {
        signal: stop.signal,
      }),
    );
    await eventually(() => ea.isLeader || eb.isLeader);
    await sleep(50);
    expect(ea.isLeader && eb.isLeader).toBe(false);
    stop.abort();
    await Promise.all(runs);
  });

  it("weighted permits, available() and holders(); leader() names the leader and resign() hands over", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const name = uniqueName("weighted");
    const two = await a.semaphore(name, 3).acquire({ permits: 2 });
    expect(await b.semaphore(name, 3).available()).toBe(1);
    expect((await b.semaphore(name, 3).holders()).map((h) => h.slot)).toEqual([...two.slots]);
    const waiting = b.semaphore(name, 3).acquire({ permits: 2, timeout: 5_000 });
    await sleep(50);
    await two.release();
    const taken = await waiting;
    expect(taken.slots).toHaveLength(2);
    await taken.release();

    const election = uniqueName("election");
    const [ea, eb] = [a.leaderElection(election, { owner: "a" }), b.leaderElection(election, { owner: "b" })];
    const stop = new AbortController();
    const tokens: (bigint | undefined)[] = [];
    const duties = (signal: AbortSignal, term: { token: bigint | undefined }) => {
      tokens.push(term.token);
      return new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
    };
    const runA = ea.run(duties, { signal: stop.signal, payload: { at: "a" } });
    await eventually(() => ea.isLeader);
    const runB = eb.run(duties, { signal: stop.signal });
    await eventually(async () => (await eb.leader())?.owner === "a");
    expect(await eb.leader()).toMatchObject({ owner: "a", payload: { at: "a" }, term: tokens[0] });
    await ea.resign();
    await eventually(() => eb.isLeader);
    await eventually(async () => (await ea.leader())?.owner === "b");
    expect(tokens[1]).toBeGreaterThan(tokens[0] as bigint);
    stop.abort();
    await Promise.all([runA, runB]);
    expect(await ea.leader()).toBeNull();
  });

  it("200 acquires at once on distinct keys, shared and exclusive, are all granted and released", async () => {
    const { make } = setup();
    const a = make();
    const keys = Array.from({ length: 200 }, () => uniqueKey());
    const handles = await Promise.all(keys.map((key, i) => a.acquire(key, { shared: i % 2 === 0 })));
    expect(a.stats().held).toBe(200);
    await Promise.all(handles.map((handle) => handle.release()));
    expect(a.stats().held).toBe(0);
    const again = await Promise.all(keys.map((key) => a.tryAcquire(key)));
    expect(again.every((handle) => handle !== null)).toBe(true);
    await Promise.all(again.map((handle) => handle?.release()));
  });

  it("bad arguments are typed errors before anything happens", async () => {
    const { make } = setup();
    const a = make();
    await expect(a.acquire(1.5)).rejects.toBeInstanceOf(InvalidLockKeyError);
    await expect(a.acquire(1, { timeout: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.tryAcquire(1, { shared: 1 as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.withLock(1, null as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.acquire(1, { shared: true, fencing: true })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.acquire(1, { shared: true, atLeastMs: 10 })).rejects.toThrow(/need an exclusive lock/);
    await expect(a.tryAcquire(1, { atLeastMs: 2000, atMostMs: 1000 })).rejects.toThrow(
      /atLeastMs \(2000\) must not exceed atMostMs \(1000\)/,
    );
    await expect(a.withLock(1, () => {}, { atMostMs: -1 })).rejects.toThrow(/options.atMostMs must be an integer/);
    expect(a.stats()).toMatchObject({ held: 0, waiting: 0 });
  });

  it("a task that takes a key it holds fails at once with AlreadyHeldError; the key stays held, then is freed", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    const inner: unknown[] = [];
    const started = performance.now();
    await a.withLock(key, async () => {
      // No timeout: without the task context these would wait for the task itself, forever.
      inner.push(await a.withLock(key, () => "inner").catch((error: unknown) => error));
      inner.push(await a.tryWithLock(key, () => "inner").catch((error: unknown) => error));
      inner.push(await a.acquire(key, { shared: true }).catch((error: unknown) => error));
      expect(await b.tryAcquire(key)).toBeNull();
    });
    expect(performance.now() - started).toBeLessThan(5_000);
    for (const error of inner) {
      expect(error).toBeInstanceOf(AlreadyHeldError);
      expect((error as AlreadyHeldError).code).toBe("ERR_PGLOCK_ALREADY_HELD");
      expect((error as Error).message).toMatch(/already holds lock .* reentrant: true/);
    }
    const h = await a.acquire(key);
    await expect(a.acquire(key, { holding: [h] })).rejects.toBeInstanceOf(AlreadyHeldError);
    await h.release();
    const free = await b.tryAcquire(key);
    expect(free).not.toBeNull();
    await free?.release();
    expect(a.stats()).toMatchObject({ held: 0, waiting: 0 });
  });

  it("reentrant: a level of the held lock, released with the outermost; no exclusive inside shared", async () => {
    const { make } = setup();
    const [a, b] = [make(), make()];
    const key = uniqueKey();
    await a.withLock(key, async (outerSignal) => {
      const value = await a.withLock(
        key,
        async (signal) => {
          expect(signal).toBe(outerSignal);
          const shared = await a.acquire(key, { shared: true, reentrant: true });
          await shared.release();
          return "inner";
        },
        { reentrant: true },
      );
      expect(value).toBe("inner");
      // The inner levels are released; the outer one still holds the key.
      expect(await b.tryAcquire(key)).toBeNull();
    });
    const free = await b.tryAcquire(key);
    expect(free).not.toBeNull();
    await free?.release();
    const upgrade = await a
      .withLock(key, () => a.withLock(key, () => {}, { reentrant: true }), { shared: true })
      .catch((error: unknown) => error);
    expect(upgrade).toBeInstanceOf(AlreadyHeldError);
    expect((upgrade as Error).message).toMatch(/holds lock .* shared and asks for it exclusively/);
    expect(a.stats()).toMatchObject({ held: 0, waiting: 0 });
  });

  it("holding names only granted handles; a task context does not leak into work that outlives it", async () => {
    const { make } = setup();
    const a = make();
    const key = uniqueKey();
    await expect(a.acquire(key, { holding: [{}] as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(a.acquire(key, { holding: "h" as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    let later: Promise<unknown> | undefined;
    await a.withLock(key, () => {
      later = new Promise((resolve) => setTimeout(resolve, 50)).then(() => a.withLock(key, () => "after"));
    });
    // Started inside the callback, run after it released: the key is no longer the task's.
    expect(await later).toBe("after");
  });
}
