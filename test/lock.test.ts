import pg from "pg";
import {
  ClosedError,
  ConnectionError,
  DeadlockError,
  InvalidArgumentError,
  LockNotHeldError,
  LockTimeoutError,
  newLock,
  PglockError,
} from "pglock";
import { describe, expect, it } from "vitest";
import {
  databaseUrl,
  drivers,
  eventually,
  locksOnKey,
  makePool,
  sessionsNamed,
  sleep,
  uniqueKey,
  uniqueName,
} from "./support/db.js";

describe("Lock: the seed's API", () => {
  it("close() releases every level and gives the connection back; a second session takes the key at once", async () => {
    const app = uniqueName();
    const pool = makePool();
    const key = uniqueKey();
    const a = await newLock(pool, key, { applicationName: app });
    await a.lock();
    await a.lock();
    await a.rLock();
    expect(await sessionsNamed(pool, app)).toHaveLength(1);
    await a.close();
    await a.close(); // idempotent
    await using b = await newLock(pool, key);
    expect(await b.lock()).toBe(true);
    expect(pool.idleCount).toBeGreaterThan(0);
    expect(await sessionsNamed(pool, app)).toHaveLength(0); // application_name restored on the pooled connection
    await expect(a.lock()).rejects.toBeInstanceOf(ClosedError);
    await expect(a.unlock()).rejects.toMatchObject({ code: "ERR_PGLOCK_CLOSED" });
  });

  it("uses a caller-owned pg.Client and leaves it open", async () => {
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const key = uniqueKey();
      const lock = await newLock(client, key);
      expect(await lock.lock()).toBe(true);
      await expect(newLock(client, key)).rejects.toThrow(/already serves another pglock session/);
      await lock.close();
      const { rows } = await client.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
      );
      expect(rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  });

  it("rejects bad arguments with typed errors before connecting", async () => {
    const pool = makePool({ connectionString: "postgres://nobody@127.0.0.1:1/none" });
    await expect(newLock({} as never, 1)).rejects.toThrow(
      /expected a pg.Pool, a connected pg.Client, a postgres.js sql or a Bun SQL, got an object/,
    );
    await expect(newLock(pool, 1, { signal: "soon" as never })).rejects.toThrow(
      /options.signal must be an AbortSignal, got "soon"/,
    );
    await expect(newLock(pool, 1, 5 as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    const unconnected = new pg.Client({ connectionString: databaseUrl() });
    await expect(newLock(unconnected, 1)).rejects.toThrow(/not connected/);
    expect(pool.totalCount).toBe(0);
  });

  it("an unreachable database is a ConnectionError, not a crash", async () => {
    const pool = makePool({ connectionString: "postgres://nobody@127.0.0.1:1/none" });
    const error = await newLock(pool, 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect(error).toBeInstanceOf(PglockError);
    expect((error as Error).message).toMatch(/could not connect to PostgreSQL/);
  });
});

// The Lock's behaviour, once per driver: a pg.Pool, a postgres.js sql and, under Bun, a Bun SQL.
describe.each(drivers)("Lock on $name", ({ connect }) => {
  const admin = makePool({ max: 2 });

  it("lock/unlock: a second session is refused while the first holds the key", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    await using b = await newLock(db, key);
    expect(await a.lock()).toBe(true);
    expect(await b.lock()).toBe(false);
    expect(await a.unlock()).toBe(true);
    expect(await b.lock()).toBe(true);
    expect(a.key.id).toBe(key);
  });

  it("stacks as PostgreSQL does: locked n times, free after n unlocks; an extra unlock returns false", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    await using b = await newLock(db, key);
    expect(await a.lock()).toBe(true);
    expect(await a.lock()).toBe(true);
    await a.waitAndLock();
    expect(await a.unlock()).toBe(true);
    expect(await a.unlock()).toBe(true);
    expect(await b.lock()).toBe(false);
    expect(await a.unlock()).toBe(true);
    expect(await a.unlock()).toBe(false);
    expect(await a.rUnlock()).toBe(false);
    expect(await b.lock()).toBe(true);
  });

  it("shared coexists with shared and excludes exclusive", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    await using b = await newLock(db, key);
    await using c = await newLock(db, key);
    expect(await a.rLock()).toBe(true);
    expect(await b.rLock()).toBe(true);
    expect(await c.lock()).toBe(false);
    await b.rUnlock();
    expect(await c.lock()).toBe(false);
    await a.rUnlock();
    expect(await c.lock()).toBe(true);
    expect(await a.rLock()).toBe(false);
    const shared = a.waitAndRLock();
    await eventually(async () => (await locksOnKey(admin, key)).some((row) => !row.granted));
    await c.unlock();
    await shared;
    expect((await locksOnKey(admin, key)).map((row) => row.mode)).toEqual(["ShareLock"]);
  });

  it("different keys are independent", async () => {
    const db = connect();
    await using a = await newLock(db, uniqueKey());
    await using b = await newLock(db, uniqueKey());
    expect(await a.lock()).toBe(true);
    expect(await b.lock()).toBe(true);
  });

  it("waitAndLock waits on the server and is handed the lock at release", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    await using b = await newLock(db, key);
    await a.lock();
    let granted = false;
    const waiting = b.waitAndLock().then(() => {
      granted = true;
    });
    await eventually(async () => (await locksOnKey(admin, key)).some((row) => !row.granted));
    expect(granted).toBe(false);
    await a.unlock();
    await waiting;
    expect(await a.lock()).toBe(false);
  });

  it("close() cancels a pending wait and releases", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    const b = await newLock(db, key);
    await a.lock();
    const waiting = b.waitAndLock().catch((error: unknown) => error); // handled at once: it rejects during close()
    await eventually(async () => (await locksOnKey(admin, key)).some((row) => !row.granted));
    await b.close();
    expect(await waiting).toBeInstanceOf(ClosedError);
    expect(await locksOnKey(admin, key)).toHaveLength(1);
  });

  it("abort during a wait cancels it on the server and rejects with signal.reason", async () => {
    const db = connect();
    const key = uniqueKey();
    await using holder = await newLock(db, key);
    await using waiter = await newLock(db, key);
    await holder.lock();
    const controller = new AbortController();
    const waiting = waiter.waitAndLock({ signal: controller.signal });
    await eventually(async () => (await locksOnKey(admin, key)).some((row) => !row.granted));
    const reason = new Error("stop waiting");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(await locksOnKey(admin, key)).toHaveLength(1); // no wait left on the server
    expect(await waiter.unlock()).toBe(false);
    // the session is still usable
    await holder.unlock();
    expect(await waiter.lock()).toBe(true);
  });

  it("an abort racing a re-entrant grant keeps exactly the levels held before", async () => {
    const db = connect();
    const key = uniqueKey();
    await using lock = await newLock(db, key);
    await using other = await newLock(db, key);
    await lock.lock();
    for (let i = 0; i < 20; i++) {
      const controller = new AbortController();
      const call = lock.waitAndLock({ signal: controller.signal });
      setTimeout(() => controller.abort(new Error("abort")), Math.random() * 2);
      await call.then(() => lock.unlock()).catch(() => {});
    }
    expect(await lock.unlock()).toBe(true);
    expect(await lock.unlock()).toBe(false);
    expect(await other.lock()).toBe(true);
  });

  it("a timeout is an AbortSignal.timeout: the wait ends and nothing is held", async () => {
    const db = connect();
    const key = uniqueKey();
    await using holder = await newLock(db, key);
    await using waiter = await newLock(db, key);
    await holder.lock();
    const error = await waiter.waitAndLock({ signal: AbortSignal.timeout(100) }).catch((e: unknown) => e);
    expect((error as DOMException).name).toBe("TimeoutError");
    expect((await locksOnKey(admin, key)).map((r) => r.granted)).toEqual([true]);
  });

  it("250 aborts at random moments, racing grants, leave every Lock holding exactly what it held", async () => {
    const db = connect();
    const key = uniqueKey();
    const holder = await newLock(db, key);
    const waiters = await Promise.all(Array.from({ length: 5 }, () => newLock(db, key)));
    let aborted = 0;
    let granted = 0;
    for (let round = 0; round < 50; round++) {
      await holder.lock();
      const calls = waiters.map(async (lock, i) => {
        const controller = new AbortController();
        setTimeout(() => controller.abort(new Error("abort")), Math.random() * 6);
        try {
          if (i % 2 === 0) await lock.waitAndLock({ signal: controller.signal });
          else await lock.waitAndRLock({ signal: controller.signal });
          granted++;
          expect(await (i % 2 === 0 ? lock.unlock() : lock.rUnlock())).toBe(true);
        } catch (error) {
          expect((error as Error).message).toBe("abort");
          aborted++;
        }
        expect(await lock.unlock()).toBe(false);
        expect(await lock.rUnlock()).toBe(false);
      });
      await sleep(Math.random() * 6);
      await holder.unlock();
      await Promise.all(calls);
      expect(await locksOnKey(admin, key)).toEqual([]);
    }
    expect(aborted + granted).toBe(250);
    expect(aborted).toBeGreaterThan(0);
    await Promise.all([holder, ...waiters].map((lock) => lock.close()));
    expect(await locksOnKey(admin, key)).toEqual([]);
  });

  it("a deadlock PostgreSQL detects (two shared holders both upgrading) is a DeadlockError; the shared levels stay", async () => {
    const db = connect();
    const key = uniqueKey();
    await using a = await newLock(db, key);
    await using b = await newLock(db, key);
    expect(await a.rLock()).toBe(true);
    expect(await b.rLock()).toBe(true);
    const upgrades = [a.waitAndLock(), b.waitAndLock()];
    // The victim's wait fails; the other waits on until the victim gives up its shared level.
    const victim = await Promise.race(
      upgrades.map((p, i) =>
        p.then(
          () => -1,
          () => i,
        ),
      ),
    );
    expect(victim).toBeGreaterThanOrEqual(0);
    const loser = victim === 0 ? a : b;
    const winner = victim === 0 ? b : a;
    const error = await (upgrades[victim] as Promise<void>).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeadlockError);
    expect((error as DeadlockError).code).toBe("ERR_PGLOCK_DEADLOCK");
    expect(await loser.rUnlock()).toBe(true);
    expect(await loser.rUnlock()).toBe(false);
    await upgrades[1 - victim];
    expect(await winner.rUnlock()).toBe(true);
    expect(await winner.unlock()).toBe(true);
  });

  it("a terminated session rejects the pending wait with ConnectionError and never crashes", async () => {
    const db = connect();
    const key = uniqueKey();
    const app = uniqueName();
    await using holder = await newLock(db, key);
    const waiter = await newLock(db, key, { applicationName: app });
    await holder.lock();
    const waiting = waiter.waitAndLock().catch((e: unknown) => e); // handled at once: it rejects during the terminate
    await eventually(async () => (await locksOnKey(admin, key)).some((row) => !row.granted));
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
      [app],
    );
    const error = await waiting;
    expect(error).toBeInstanceOf(ConnectionError);
    await expect(waiter.lock()).rejects.toBeInstanceOf(ConnectionError);
    await waiter.close();
    await expect(waiter.lock()).rejects.toBeInstanceOf(ClosedError);
    // A terminated or ended backend leaves pg_stat_activity a moment after its socket closes.
    await eventually(async () => (await sessionsNamed(admin, app)).length === 0);
  });
});

describe("Lock: statements that travel together", () => {
  it("concurrent calls on one Lock share round trips, and each gets its own answer", async () => {
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    const pool = makePool();
    try {
      const key = uniqueKey();
      const lock = await newLock(client, key);
      let statements = 0;
      const query = client.query.bind(client);
      // Counts round trips only; the database answers every statement.
      client.query = ((text: string, values: unknown[]) => {
        statements++;
        return query(text, values);
      }) as typeof client.query;
      const taken = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? lock.lock() : lock.rLock())));
      expect(taken.every(Boolean)).toBe(true);
      expect(statements).toBeLessThan(100);
      const rows = await locksOnKey(pool, key);
      expect(rows.map((row) => row.mode).sort()).toEqual(["ExclusiveLock", "ShareLock"]);
      const released = await Promise.all(
        Array.from({ length: 102 }, (_, i) => (i % 2 ? lock.unlock() : lock.rUnlock())),
      );
      expect(released.filter(Boolean)).toHaveLength(100);
      expect(await locksOnKey(pool, key)).toEqual([]);
      await lock.close();
    } finally {
      await client.end();
    }
  });
});

describe("Lock: abort and failure", () => {
  it("an already-aborted signal rejects at once with its reason, without a query", async () => {
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const lock = await newLock(client, uniqueKey());
      const sent: string[] = [];
      const query = client.query.bind(client);
      // Counts statements only; the database still answers every one.
      client.query = ((text: string, values: unknown[]) => {
        sent.push(text);
        return query(text, values);
      }) as typeof client.query;
      const reason = new Error("gave up");
      const signal = AbortSignal.abort(reason);
      const calls = ["lock", "rLock", "waitAndLock", "waitAndRLock", "unlock", "rUnlock"] as const;
      for (const call of calls) {
        await expect(lock[call]({ signal })).rejects.toBe(reason);
      }
      await expect(newLock(client, 1, { signal })).rejects.toBe(reason);
      expect(sent).toEqual([]);
      await lock.close();
    } finally {
      await client.end();
    }
  });

  it("the server's lock_timeout (55P03) is a LockTimeoutError, and pg_locks confirms nothing is held", async () => {
    const pool = makePool();
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      await client.query("SET lock_timeout = '50ms'");
      const key = uniqueKey();
      await using holder = await newLock(pool, key);
      await holder.lock();
      const lock = await newLock(client, key);
      const error = await lock.waitAndLock().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockTimeoutError);
      expect((error as LockTimeoutError).timeoutMs).toBeUndefined();
      expect(await lock.unlock()).toBe(false);
      expect((await locksOnKey(pool, key)).map((row) => row.pid)).not.toContain(
        (client as unknown as { processID: number }).processID,
      );
      await lock.close();
    } finally {
      await client.end();
    }
  });

  it("an unlock PostgreSQL answers false (released behind pglock's back) is a LockNotHeldError", async () => {
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const lock = await newLock(client, uniqueKey());
      await lock.lock();
      await client.query("SELECT pg_advisory_unlock_all()"); // what a pooler switching sessions amounts to
      const error = await lock.unlock().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockNotHeldError);
      expect((error as Error).message).toMatch(/does not hold lock .* transaction mode/);
      expect(await lock.unlock()).toBe(false);
      await lock.close();
    } finally {
      await client.end();
    }
  });

  it("no connection leaks: 30 Locks opened and closed leave no session behind", async () => {
    const app = uniqueName();
    const pool = makePool({ max: 30, idleTimeoutMillis: 1 });
    const admin = makePool({ max: 1 });
    const locks = await Promise.all(
      Array.from({ length: 30 }, () => newLock(pool, uniqueKey(), { applicationName: app })),
    );
    expect(await sessionsNamed(admin, app)).toHaveLength(30);
    await Promise.all(locks.map((lock) => lock.lock()));
    await Promise.all(locks.map((lock) => lock.close()));
    // The pool ends its idle clients after 1 ms; each backend leaves pg_stat_activity a moment later.
    await eventually(async () => (await sessionsNamed(admin, app)).length === 0);
    await eventually(() => pool.totalCount <= 1);
  });
});
