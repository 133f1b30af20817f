import {
  ClosedError,
  createLocker,
  InvalidArgumentError,
  type Locker,
  LockLostError,
  LockTimeoutError,
  newLock,
  PglockError,
} from "pglock";
import { describe, expect, it } from "vitest";
import {
  databaseUrl,
  eventually,
  locksOnKey,
  makePool,
  sessionsNamed,
  sleep,
  uniqueKey,
  uniqueName,
} from "./support/db.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { makeLocker } from "./support/lockers.js";

describe("Locker: semantics", () => {
  it("two handles on one key in one Locker conflict as two processes would", async () => {
    const locker = makeLocker();
    const key = uniqueKey();
    const first = await locker.acquire(key);
    expect(await locker.tryAcquire(key)).toBeNull();
    let second = false;
    const waiting = locker.acquire(key).then((handle) => {
      second = true;
      return handle;
    });
    await sleep(100);
    expect(second).toBe(false);
    await first.release();
    const handle = await waiting;
    expect(handle.key.id).toBe(key);
    expect(handle.shared).toBe(false);
    await handle.release();
    await handle.release(); // idempotent
  });

  it("shared handles coexist in one Locker and across Lockers; exclusive waits for all of them", async () => {
    const a = makeLocker();
    const b = makeLocker();
    const key = uniqueKey();
    const s1 = await a.acquire(key, { shared: true });
    const s2 = await a.acquire(key, { shared: true });
    const s3 = await b.acquire(key, { shared: true });
    expect(s1.shared && s2.shared && s3.shared).toBe(true);
    expect(await a.tryAcquire(key)).toBeNull();
    expect(await b.tryAcquire(key)).toBeNull();
    const exclusive = b.acquire(key, { timeout: 10_000 });
    await s1.release();
    await s3.release();
    expect(await Promise.race([exclusive.then(() => "granted"), sleep(150).then(() => "waiting")])).toBe("waiting");
    await s2.release();
    await (await exclusive).release();
  });

  it("excludes other processes' sessions, and a pair key is its own key space", async () => {
    const locker = makeLocker();
    const pool = makePool();
    const key = uniqueKey();
    await using handle = await locker.acquire(key);
    await using other = await newLock(pool, key);
    expect(await other.lock()).toBe(false);
    await using pair = await locker.acquire([1, Number(key & 0xffffn)]);
    expect(pair.key.pair).toBeDefined();
    expect(handle.signal.aborted).toBe(false);
  });

  it("timeout rejects with LockTimeoutError and cancels the server-side wait", async () => {
    const locker = makeLocker();
    const other = makeLocker();
    const pool = makePool();
    const key = uniqueKey();
    await using held = await other.acquire(key);
    const error = await locker.acquire(key, { timeout: 150 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect(error).toMatchObject({ code: "ERR_PGLOCK_TIMEOUT", timeoutMs: 150 });
    expect((await locksOnKey(pool, key)).map((row) => row.granted)).toEqual([true]);
    expect(locker.stats()).toMatchObject({ held: 0, waiting: 0 });
    expect(held.signal.aborted).toBe(false);
  });

  it("an aborted signal rejects with its reason; an already-aborted one at once", async () => {
    const locker = makeLocker();
    const key = uniqueKey();
    const reason = new Error("no longer needed");
    await expect(locker.acquire(key, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(locker.tryAcquire(key, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(locker.stats().sessions).toBe(0);
    await using held = await locker.acquire(key);
    const controller = new AbortController();
    const waiting = locker.acquire(key, { signal: controller.signal });
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(held.signal.aborted).toBe(false);
  });

  it("withLock releases in every path and returns the function's value", async () => {
    const locker = makeLocker();
    const key = uniqueKey();
    expect(await locker.withLock(key, async () => 42)).toBe(42);
    await expect(
      locker.withLock(key, async () => {
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    const handle = await locker.tryAcquire(key);
    expect(handle).not.toBeNull();
    await handle?.release();
    expect(locker.stats().held).toBe(0);
  });

  it("100 concurrent withLock on one key over 4 Lockers never overlap: a read-then-write counter is exact", async () => {
    const pool = makePool();
    const table = `pglock_counter_${uniqueName("t").replace(/-/g, "_")}`;
    await pool.query(`CREATE TABLE ${table} (n int NOT NULL)`);
    await pool.query(`INSERT INTO ${table} VALUES (0)`);
    const key = uniqueKey();
    const group = Array.from({ length: 4 }, () => makeLocker({}, makePool({ max: 10 })));
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        (group[i % 4] as Locker).withLock(key, async () => {
          maxInside = Math.max(maxInside, ++inside);
          const { rows } = await pool.query(`SELECT n FROM ${table}`);
          await sleep(Math.random() * 2);
          await pool.query(`UPDATE ${table} SET n = $1`, [rows[0].n + 1]);
          inside--;
        }),
      ),
    );
    const { rows } = await pool.query(`SELECT n FROM ${table}`);
    await pool.query(`DROP TABLE ${table}`);
    expect(rows[0].n).toBe(100);
    expect(maxInside).toBe(1);
  });

  it("rejects bad arguments with typed errors naming the option", async () => {
    const pool = makePool();
    // @ts-expect-error a connection string is not a database: TypeScript refuses it (issue #24)
    expect(() => createLocker("postgres://app@db.example/prod")).toThrow(
      /expected a pg.Pool, a postgres.js sql or a Bun SQL/,
    );
    expect(() => createLocker({} as never)).toThrow(
      /expected a pg.Pool, a postgres.js sql or a Bun SQL, got an object/,
    );
    expect(() => createLocker(pool, { maxSessions: 0 })).toThrow(/options.maxSessions must be an integer >= 1, got 0/);
    expect(() => createLocker(pool, { keepaliveMs: -1 })).toThrow(
      /options.keepaliveMs must be a number of milliseconds/,
    );
    const locker = makeLocker();
    await expect(locker.acquire(1, { timeout: -5 })).rejects.toThrow(/options.timeout .* got -5/);
    await expect(locker.acquire(1, { timeout: Number.NaN })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(locker.acquire(1, { timeout: Number.POSITIVE_INFINITY })).rejects.toThrow(/got Infinity/);
    await expect(locker.acquire(1, { signal: {} as AbortSignal })).rejects.toThrow(
      /options.signal must be an AbortSignal/,
    );
    await expect(locker.acquire(1, { shared: "yes" as never })).rejects.toThrow(/options.shared must be a boolean/);
    await expect(locker.acquire(1.5)).rejects.toMatchObject({ code: "ERR_PGLOCK_INVALID_KEY" });
    await expect(locker.withLock(1, "work" as never)).rejects.toThrow(/fn must be a function/);
    expect(locker.stats().sessions).toBe(0);
  });
});

describe("Locker: scale and multiplexing", () => {
  it("5,000 locks held at once use at most maxSessions connections", async () => {
    const app = uniqueName();
    const admin = makePool({ max: 2 });
    const locker = makeLocker({ maxSessions: 4, applicationName: app }, makePool({ max: 10 }));
    const base = uniqueKey() & ~0xffffn;
    const handles = await Promise.all(Array.from({ length: 5000 }, (_, i) => locker.acquire(base + BigInt(i))));
    const sessions = await sessionsNamed(admin, app);
    expect(sessions.length).toBeGreaterThan(0);
    expect(sessions.length).toBeLessThanOrEqual(4);
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = ANY($1)",
      [sessions],
    );
    expect(rows[0].n).toBe(5000);
    expect(locker.stats()).toMatchObject({ held: 5000, waiting: 0 });
    await Promise.all(handles.map((handle) => handle.release()));
    expect(locker.stats().held).toBe(0);
  });

  it("a release is never stuck behind a wait, and idle sessions go back to the pool", async () => {
    const locker = makeLocker({ maxSessions: 2, idleMs: 50 });
    const other = makeLocker();
    const busy = uniqueKey();
    const held = await other.acquire(busy);
    const mine = await locker.acquire(uniqueKey());
    const waiting = locker.acquire(busy, { timeout: 20_000 }); // a server-side wait on its own session
    await eventually(() => locker.stats().waiting === 1);
    await mine.release(); // must not queue behind the wait
    expect(locker.stats().held).toBe(0);
    await held.release();
    await (await waiting).release();
    await eventually(() => locker.stats().sessions === 0);
  });

  it("with one session, waits poll with try-locks instead of blocking that session", async () => {
    const locker = makeLocker({ maxSessions: 1 });
    const other = makeLocker();
    const busy = uniqueKey();
    const held = await other.acquire(busy);
    const waiting = locker.acquire(busy, { timeout: 20_000 });
    await sleep(50);
    const free = await locker.acquire(uniqueKey(), { timeout: 5_000 });
    await free.release();
    await held.release();
    await (await waiting).release();
    expect(locker.stats().sessions).toBeLessThanOrEqual(1);
  });

  it("520 aborts and timeouts at random moments leave pg_locks clean", async () => {
    const pool = makePool();
    const keys = Array.from({ length: 4 }, () => uniqueKey());
    const holders = makeLocker();
    const waiters = [makeLocker(), makeLocker(), makeLocker({ maxSessions: 2 })];
    let outcomes = 0;
    for (let round = 0; round < 20; round++) {
      const held = await Promise.all(keys.map((key) => holders.acquire(key)));
      const calls = Array.from({ length: 26 }, async (_, i) => {
        const locker = waiters[i % waiters.length] as Locker;
        const key = keys[i % keys.length] as bigint;
        const shared = i % 3 === 0;
        const controller = new AbortController();
        setTimeout(() => controller.abort(new Error("abort")), Math.random() * 8);
        try {
          const options = i % 2 ? { shared, signal: controller.signal } : { shared, timeout: Math.random() * 8 };
          const handle = await locker.acquire(key, options);
          await handle.release();
        } catch (error) {
          expect(error instanceof LockTimeoutError || (error as Error).message === "abort").toBe(true);
        }
        outcomes++;
      });
      await sleep(Math.random() * 8);
      await Promise.all(held.map((handle) => handle.release()));
      await Promise.all(calls);
      for (const key of keys) expect(await locksOnKey(pool, key)).toEqual([]);
    }
    expect(outcomes).toBe(520);
    for (const locker of waiters) expect(locker.stats()).toMatchObject({ held: 0, waiting: 0 });
  });

  it("a pooled connection the application ran DISCARD ALL on between two sessions still works", async () => {
    // pglock prepares its lock statements by name on a pool's connections; DISCARD ALL (or DEALLOCATE)
    // drops them on the server while pg still believes them prepared (SQLSTATE 26000 on next use).
    const pool = makePool({ max: 2 });
    const locker = createLocker(pool, { idleMs: 0 });
    const key = uniqueKey();
    await (await locker.acquire(key)).release();
    await eventually(() => locker.stats().sessions === 0);
    await pool.query("DISCARD ALL");
    const handle = await locker.acquire(key);
    expect((await locksOnKey(makePool({ max: 1 }), key)).filter((row) => row.granted)).toHaveLength(1);
    await handle.release();
    await locker.close();
  });

  it("close() rejects pending acquires, releases everything and leaves no session behind", async () => {
    const app = uniqueName();
    const admin = makePool({ max: 2 });
    const locker = createLocker(makePool(), { applicationName: app });
    const other = makeLocker();
    const key = uniqueKey();
    await using held = await other.acquire(key);
    const mine = await locker.acquire(uniqueKey());
    const pending = locker.acquire(key).catch((error: unknown) => error); // handled at once: it rejects during close()
    await eventually(() => locker.stats().waiting === 1);
    await locker.close();
    expect(await pending).toBeInstanceOf(ClosedError);
    expect(mine.signal.reason).toBeInstanceOf(LockLostError);
    // An ended backend leaves pg_stat_activity a moment after its socket closes.
    await eventually(async () => (await sessionsNamed(admin, app)).length === 0);
    await expect(locker.acquire(1)).rejects.toMatchObject({ code: "ERR_PGLOCK_CLOSED" });
    expect(held.signal.aborted).toBe(false);
  });
});

describe("Locker: loss", () => {
  async function lossAfter(fault: (pids: number[], proxy: FaultProxy) => Promise<void> | void, options = {}) {
    const proxy = await FaultProxy.start(databaseUrl());
    const app = uniqueName();
    const admin = makePool({ max: 2 });
    const locker = makeLocker(
      { applicationName: app, ...options },
      makePool({ connectionString: proxy.url(databaseUrl()), max: 5 }),
    );
    const key = uniqueKey();
    try {
      const handle = await locker.acquire(key);
      const shared = await locker.acquire(uniqueKey(), { shared: true });
      const pids = await sessionsNamed(admin, app);
      const started = performance.now();
      await fault(pids, proxy);
      await eventually(() => handle.signal.aborted && shared.signal.aborted, 15_000);
      const elapsed = performance.now() - started;
      expect(handle.signal.reason).toBeInstanceOf(LockLostError);
      expect(handle.signal.reason).toBeInstanceOf(PglockError);
      await handle.release(); // nothing to release; must not throw
      // The Locker goes on with new sessions; the lost lock is free on the server.
      await eventually(async () => (await locksOnKey(admin, key)).length === 0, 15_000);
      return { elapsed, locker, key };
    } finally {
      await proxy.stop();
    }
  }

  it("pg_terminate_backend aborts every handle's signal within 1 s", async () => {
    const admin = makePool({ max: 1 });
    const { elapsed } = await lossAfter(async (pids) => {
      await admin.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [pids]);
    });
    expect(elapsed).toBeLessThan(1_000);
  });

  it("a TCP reset aborts every handle's signal within 1 s", async () => {
    const { elapsed } = await lossAfter((_, proxy) => proxy.reset());
    expect(elapsed).toBeLessThan(1_000);
  });

  it("a silent partition is detected by the probe within keepaliveMs + probeTimeoutMs", async () => {
    const { elapsed } = await lossAfter((_, proxy) => proxy.blackhole(), { keepaliveMs: 200, probeTimeoutMs: 300 });
    expect(elapsed).toBeLessThan(200 + 300 + 1_000);
  });

  it("idle_session_timeout ending a session holding locks aborts its handles (PostgreSQL 14+)", async () => {
    // https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-SESSION-TIMEOUT
    const url = new URL(databaseUrl());
    url.searchParams.set("options", "-c idle_session_timeout=300");
    const locker = makeLocker({ keepaliveMs: 0 }, makePool({ connectionString: url.toString() }));
    const { rows } = await makePool({ max: 1 }).query("SELECT current_setting('server_version_num')::int AS v");
    if (rows[0].v < 140000) {
      // Before 14 the setting does not exist: the server refuses such sessions, and pglock says so.
      await expect(locker.acquire(uniqueKey())).rejects.toThrow(/idle_session_timeout/);
      return;
    }
    const handle = await locker.acquire(uniqueKey());
    await eventually(() => handle.signal.aborted, 10_000);
    expect(handle.signal.reason).toBeInstanceOf(LockLostError);
    expect((handle.signal.reason as Error).message).toMatch(/lost, its session ended/);
  });

  it("withLock rejects with LockLostError when the lock is lost, even if the function resolved", async () => {
    const admin = makePool({ max: 1 });
    const app = uniqueName();
    const locker = makeLocker({ applicationName: app });
    const result = locker.withLock(uniqueKey(), async (signal) => {
      await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
        [app],
      );
      await eventually(() => signal.aborted);
      return "done";
    });
    await expect(result).rejects.toBeInstanceOf(LockLostError);
    expect(locker.stats()).toMatchObject({ held: 0 });
    // and the Locker still works, on a new session
    expect(await locker.withLock(uniqueKey(), () => "again")).toBe("again");
  });
});
