import { spawn } from "node:child_process";
import { hostname } from "node:os";
import pg from "pg";
import {
  type AdvisoryLockInfo,
  createLocker,
  fencingTableSql,
  hashKey,
  InvalidArgumentError,
  inspectLocks,
  type Locker,
  LockLostError,
  LockTimeoutError,
  Semaphore,
  withXactLock,
} from "pglock";
import { describe, expect, it } from "vitest";
import { databaseUrl, eventually, locksOnKey, makePool, makeSql, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { makeLocker } from "./support/lockers.js";

describe("tryWithLock", () => {
  it("runs the function only when the lock is free", async () => {
    const a = makeLocker();
    const b = makeLocker();
    const key = uniqueKey();
    expect(await a.tryWithLock(key, () => "ran")).toEqual({ acquired: true, value: "ran" });
    const held = await b.acquire(key);
    let ran = false;
    expect(await a.tryWithLock(key, () => (ran = true))).toEqual({ acquired: false });
    expect(ran).toBe(false);
    await held.release();
    await expect(a.tryWithLock(key, "x" as never)).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe("acquireAll", () => {
  it("two callers with overlapping sets in opposite orders never deadlock", async () => {
    const a = makeLocker();
    const b = makeLocker();
    const keys = [uniqueKey(), uniqueKey(), uniqueKey()];
    const reversed = [...keys].reverse();
    let inside = 0;
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const group = await (i % 2 ? a : b).acquireAll(i % 2 ? keys : reversed, { timeout: 20_000 });
        expect(++inside).toBe(1);
        await sleep(1);
        inside--;
        await group.release();
      }),
    );
  });

  it("is all or nothing within one timeout, and the group's signal reports a loss", async () => {
    const a = makeLocker();
    const b = makeLocker();
    const pool = makePool();
    const [k1, k2, k3] = [uniqueKey(), uniqueKey(), uniqueKey()] as [bigint, bigint, bigint];
    const blocker = await b.acquire(k2);
    const error = await a.acquireAll([k1, k2, k3], { timeout: 200 }).catch((e) => e);
    expect(error).toBeInstanceOf(LockTimeoutError);
    for (const key of [k1, k3]) expect(await locksOnKey(pool, key)).toEqual([]);
    await blocker.release();
    await using group = await a.acquireAll([k3, k1, [7, 7]]);
    expect(group.keys.map(String)).toEqual([...[k1, k3].sort((x, y) => (x < y ? -1 : 1)).map(String), "(7,7)"]);
    expect(group.signal.aborted).toBe(false);
    await expect(a.acquireAll([1, 1])).rejects.toThrow(/appears twice/);
    await expect(a.acquireAll("k" as never)).rejects.toThrow(/keys must be an array/);
  });
});

describe("fencing tokens", () => {
  it("strictly increase per key across every holder, in two Lockers, above the server's timeline", async () => {
    const table = `pglock_fencing_${uniqueName("t").replace(/-/g, "_")}`;
    const pool = makePool();
    const a = makeLocker({ fencingTable: table });
    const b = makeLocker({ fencingTable: table });
    const key = uniqueKey();
    const tokens: bigint[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const handle = await (i % 2 ? a : b).acquire(key, { fencing: true });
        tokens.push(handle.fencingToken as bigint);
        await handle.release();
      }),
    );
    // (timeline << 40) + n: the server's timeline keeps tokens increasing across a failover.
    const { rows } = await pool.query(
      "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8::text AS timeline",
    );
    const floor = BigInt(rows[0].timeline) << 40n;
    expect(tokens).toEqual(Array.from({ length: 20 }, (_, i) => floor + BigInt(i + 1)));
    const other = await a.acquire(uniqueKey(), { fencing: true });
    expect(other.fencingToken).toBe(floor + 1n);
    await other.release();
    await pool.query(`DROP TABLE ${table}`);
  });

  it("reject a shared lock and a bad table name", async () => {
    const locker = makeLocker();
    await expect(locker.acquire(1, { shared: true, fencing: true })).rejects.toThrow(/fencing needs an exclusive lock/);
    expect(() => createLocker(makePool(), { fencingTable: "x; DROP TABLE y" })).toThrow(/lower-case SQL name/);
    expect(() => fencingTableSql("Robert'); --")).toThrow(InvalidArgumentError);
    expect(fencingTableSql()).toMatch(/CREATE TABLE IF NOT EXISTS pglock_fencing/);
  });
});

describe("withXactLock", () => {
  async function client() {
    const c = new pg.Client({ connectionString: databaseUrl() });
    await c.connect();
    return c;
  }

  it("holds the lock until the caller's transaction commits", async () => {
    const [c1, c2] = [await client(), await client()];
    try {
      const key = uniqueKey();
      await c1.query("BEGIN");
      expect(await withXactLock(c1, key, async () => "inside")).toBe("inside");
      await c2.query("BEGIN");
      await expect(withXactLock(c2, key, () => 1, { timeout: 100 })).rejects.toBeInstanceOf(LockTimeoutError);
      // the timeout did not abort c2's transaction
      expect((await c2.query("SELECT 1 AS one")).rows[0].one).toBe(1);
      const waiting = withXactLock(c2, key, () => "second", { timeout: 10_000 });
      await sleep(50);
      await c1.query("COMMIT");
      expect(await waiting).toBe("second");
      await c2.query("ROLLBACK");
      expect(await locksOnKey(makePool(), key)).toEqual([]);
    } finally {
      await c1.end();
      await c2.end();
    }
  });

  it("an abort racing the grant leaves the transaction usable and holding nothing", async () => {
    const [c1, c2] = [await client(), await client()];
    const pool = makePool();
    try {
      const key = uniqueKey();
      for (let i = 0; i < 30; i++) {
        await c1.query("BEGIN");
        await withXactLock(c1, key, () => {});
        await c2.query("BEGIN");
        const controller = new AbortController();
        const attempt = withXactLock(c2, key, () => "got it", { signal: controller.signal }).catch((e) => e);
        setTimeout(() => controller.abort(new Error("abort")), Math.random() * 4);
        await sleep(Math.random() * 4);
        await c1.query("COMMIT");
        const result = await attempt;
        const held = (await locksOnKey(pool, key)).length;
        expect(held).toBe(result === "got it" ? 1 : 0);
        expect((await c2.query("SELECT 1 AS one")).rows[0].one).toBe(1);
        await c2.query("COMMIT");
      }
    } finally {
      await c1.end();
      await c2.end();
    }
  });

  it("timeout 0 takes the lock only if it is free now; a refusal leaves the transaction usable", async () => {
    const [c1, c2] = [await client(), await client()];
    try {
      const key = uniqueKey();
      await c1.query("BEGIN");
      expect(await withXactLock(c1, key, () => "free", { timeout: 0 })).toBe("free");
      await c2.query("BEGIN");
      const error = await withXactLock(c2, key, () => 1, { timeout: 0 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LockTimeoutError);
      expect((error as LockTimeoutError).timeoutMs).toBe(0);
      expect((await c2.query("SELECT 1 AS one")).rows[0].one).toBe(1);
      await c1.query("COMMIT");
      await c2.query("COMMIT");
    } finally {
      await c1.end();
      await c2.end();
    }
  });

  it("postgres.js: in sql.begin, a timeout neither fails the transaction nor changes its lock_timeout", async () => {
    const key = uniqueKey();
    const table = uniqueName("xact_pgjs").replaceAll("-", "_");
    const admin = makePool();
    await admin.query(`CREATE TABLE ${table} (n int)`);
    let holding!: () => void;
    const held = new Promise<void>((resolve) => {
      holding = resolve;
    });
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    try {
      const first = makeSql().begin(async (tx) => {
        await withXactLock(tx, key, async () => holding());
        await gate; // holds the lock until the gate opens, then commits
      });
      await held;
      const second = await makeSql().begin(async (tx) => {
        await expect(withXactLock(tx, key, () => 1, { timeout: 100 })).rejects.toBeInstanceOf(LockTimeoutError);
        await expect(withXactLock(tx, key, () => 1, { timeout: 0 })).rejects.toMatchObject({ timeoutMs: 0 });
        await tx.unsafe(`INSERT INTO ${table} VALUES (1)`);
        const waiting = withXactLock(
          tx,
          key,
          async () => (await tx.unsafe("SELECT current_setting('lock_timeout') AS v"))[0]?.v,
          { timeout: 10_000 },
        );
        await sleep(50);
        finish();
        return await waiting;
      });
      await first;
      expect(second).toBe("0"); // the server default, put back after the wait
      expect((await admin.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n).toBe(1); // committed
      expect(await locksOnKey(admin, key)).toEqual([]);
    } finally {
      finish();
      await admin.query(`DROP TABLE ${table}`);
    }
  });

  it("postgres.js: refuses the instance itself and an abort signal, with the reason", async () => {
    const sql = makeSql();
    // @ts-expect-error the instance is not a transaction: TypeScript refuses it, and so does pglock
    await expect(withXactLock(sql, 1, () => {})).rejects.toThrow(/pass the transaction's sql/);
    await sql.begin(async (tx) => {
      await expect(withXactLock(tx, 1, () => {}, { signal: new AbortController().signal })).rejects.toThrow(
        /signal is not supported on a postgres.js or Bun transaction/,
      );
    });
  });

  it("refuses a client that is not in a transaction", async () => {
    const c = await client();
    try {
      await expect(withXactLock(c, 1, () => {})).rejects.toThrow(/not in a transaction: call BEGIN first/);
    } finally {
      await c.end();
    }
  });
});

describe("inspectLocks", () => {
  it("shows holders and waiters with the key decoded, mode, application and wait start", async () => {
    const app = uniqueName();
    const pool = makePool();
    const holder = makeLocker({ applicationName: app });
    const waiter = makeLocker({ applicationName: app });
    const key = uniqueKey();
    const held = await holder.acquire(key, { shared: false });
    const pairHeld = await holder.acquire([-5, 2 ** 31 - 1], { shared: true });
    const waiting = waiter.acquire(key, { timeout: 10_000 });
    await eventually(async () => (await inspectLocks(pool, { key })).length === 2);
    const rows = await inspectLocks(pool, { key });
    expect(rows.map((r) => [r.key.id, r.mode, r.granted, r.owner?.application])).toEqual([
      [key, "exclusive", true, app],
      [key, "exclusive", false, app],
    ]);
    // Whose each session is: this host and process, and two different Lockers.
    const [holding, awaiting] = rows as [AdvisoryLockInfo, AdvisoryLockInfo];
    for (const row of rows) {
      expect(row.owner).toMatchObject({ host: hostname().slice(0, 24), processId: process.pid, kind: "locker" });
      expect(row.applicationName?.length).toBeLessThanOrEqual(63);
    }
    expect(holding.owner?.number).not.toBe(awaiting.owner?.number);
    expect(holding.waitingFor).toEqual([]);
    expect(awaiting.waitingFor).toEqual([holding.pid]);
    const { rows: version } = await pool.query("SELECT current_setting('server_version_num')::int AS v");
    if (version[0].v >= 140000) {
      expect(awaiting.waitingSince).toBeInstanceOf(Date);
      expect(awaiting.waitingMs).toBeGreaterThanOrEqual(0);
    }
    // This test's pair, not the first pair on the server: test files run in parallel, and others hold pairs.
    const pairs = await inspectLocks(pool, { key: [-5, 2 ** 31 - 1] });
    expect(pairs).toHaveLength(1);
    expect(pairs[0]?.key.pair).toEqual([-5, 2 ** 31 - 1]);
    expect(pairs[0]?.mode).toBe("shared");
    await held.release();
    await (await waiting).release();
    await pairHeld.release();
    await expect(inspectLocks({} as never)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("shows the name of a key this process hashed, and only the key of one it did not", async () => {
    const name = uniqueName("named");
    const locker = makeLocker();
    const held = await locker.acquire(name);
    const [row] = await inspectLocks(makePool(), { key: name });
    expect(row?.key.name).toBe(name);
    expect(row?.key.toString()).toBe(`${JSON.stringify(name)} (${hashKey(name)})`);
    await held.release();
    const unnamed = await locker.acquire(uniqueKey());
    const [other] = await inspectLocks(makePool(), { key: unnamed.key });
    expect(other?.key.name).toBeUndefined();
    await unnamed.release();
  });

  it("a user's application_name longer than 63 bytes is shortened, never the owner", async () => {
    const locker = makeLocker({ applicationName: `é${"x".repeat(100)}` });
    const key = uniqueKey();
    const held = await locker.acquire(key);
    const [row] = await inspectLocks(makePool(), { key });
    expect(row?.applicationName?.length).toBe(63);
    expect(row?.owner).toMatchObject({ processId: process.pid, kind: "locker" });
    expect(row?.owner?.application.startsWith("?xxx")).toBe(true);
    await held.release();
  });
});

describe("semaphore", () => {
  it("never has more than `permits` holders across Lockers, and every waiter gets through", async () => {
    const name = uniqueName("sem");
    const lockersUsed = [makeLocker(), makeLocker()];
    let inside = 0;
    let most = 0;
    let done = 0;
    const slots = new Set<number>();
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const semaphore = (lockersUsed[i % 2] as Locker).semaphore(name, 3);
        const handle = await semaphore.acquire({ timeout: 20_000 });
        most = Math.max(most, ++inside);
        slots.add(handle.slot);
        // Hold until the semaphore is full (or no one else is left to come in), so that reaching 3
        // holders does not depend on how fast a loaded machine hands the permits out.
        await eventually(() => inside >= 3 || done + inside === 12, 15_000);
        await sleep(20);
        inside--;
        done++;
        await handle.release();
      }),
    );
    expect(most).toBe(3);
    expect([...slots].sort()).toEqual([0, 1, 2]);
  });

  it("tryAcquire is null when full; slot keys are stable; bad arguments are typed errors", async () => {
    const locker = makeLocker();
    const name = uniqueName("sem");
    const semaphore = locker.semaphore(name, 2);
    const a = await semaphore.tryAcquire();
    const b = await semaphore.tryAcquire();
    expect(await semaphore.tryAcquire()).toBeNull();
    await expect(semaphore.acquire({ timeout: 100 })).rejects.toBeInstanceOf(LockTimeoutError);
    expect(Semaphore.slotKey(name, 1).identity).toBe(String(createLockKeyOf(`pglock:semaphore:${name}:1`)));
    await a?.release();
    const c = await semaphore.acquire({ timeout: 5_000 });
    expect(c.slot).toBe(a?.slot);
    await Promise.all([b?.release(), c.release()]);
    expect(() => locker.semaphore(name, 0)).toThrow(/permits must be an integer >= 1, got 0/);
    expect(() => locker.semaphore("", 1)).toThrow(/name must be a non-empty string/);
  });

  it("a waiter is woken by the release's NOTIFY, not only by the fallback poll", async () => {
    const a = makeLocker();
    const b = makeLocker();
    const name = uniqueName("sem");
    const held = await a.semaphore(name, 1).acquire();
    const waiting = b.semaphore(name, 1).acquire({ timeout: 10_000 });
    await sleep(700); // past one fallback poll, so only a NOTIFY can explain a quick wake-up
    const released = performance.now();
    await held.release();
    const handle = await waiting;
    const wokenAfter = performance.now() - released;
    await handle.release();
    expect(wokenAfter).toBeLessThan(400);
  });
});

function createLockKeyOf(name: string): bigint {
  // FNV-1a 64, written out again so the test pins the documented derivation, not the implementation.
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(name)) hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & (2n ** 64n - 1n);
  return BigInt.asIntN(64, hash);
}

describe("leader election", () => {
  it("one leader at a time; after a loss the leader campaigns again; events and isLeader follow", async () => {
    const name = uniqueName("cluster");
    const admin = makePool({ max: 1 });
    const app = uniqueName();
    const a = makeLocker({ applicationName: app });
    const b = makeLocker();
    const electionA = a.leaderElection(name);
    const electionB = b.leaderElection(name);
    const log: string[] = [];
    electionA.on("elected", () => log.push("a elected"));
    electionA.on("demoted", (reason) => log.push(`a demoted ${reason instanceof LockLostError ? "lost" : "quit"}`));
    electionB.on("elected", () => log.push("b elected"));
    const stopA = new AbortController();
    const stopB = new AbortController();
    const runA = electionA.run(
      async (signal) => {
        await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
      },
      { signal: stopA.signal },
    );
    await eventually(() => electionA.isLeader);
    const runB = electionB.run(
      async (signal) => {
        await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
      },
      { signal: stopB.signal },
    );
    await sleep(100);
    expect(electionB.isLeader).toBe(false);
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
      [app],
    );
    await eventually(() => electionB.isLeader);
    stopB.abort();
    await runB;
    await eventually(() => electionA.isLeader); // A campaigned again after its loss
    stopA.abort();
    await runA;
    expect(log.slice(0, 3)).toEqual(["a elected", "a demoted lost", "b elected"]);
    expect(log.at(-1)).toBe("a demoted quit");
  });

  it("when the leader's process is killed, a follower leads within 1 s", async () => {
    const name = uniqueName("cluster");
    // node itself, not the tsx wrapper: the killed process must be the one holding the connection.
    const child = spawn(process.execPath, ["--import", "tsx", "test/support/leader-child.ts", name], {
      env: { ...process.env, DATABASE_URL: databaseUrl() },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (chunk) => String(chunk).includes("elected") && resolve());
      child.on("exit", () => reject(new Error("the leader process exited early")));
    });
    const follower = makeLocker().leaderElection(name);
    const stop = new AbortController();
    let electedAt = 0;
    follower.on("elected", () => {
      electedAt = performance.now();
    });
    const run = follower.run(
      (signal) => new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
      {
        signal: stop.signal,
      },
    );
    await sleep(200);
    expect(follower.isLeader).toBe(false);
    const killedAt = performance.now();
    child.kill("SIGKILL");
    await eventually(() => follower.isLeader, 10_000);
    expect(electedAt - killedAt).toBeLessThan(1_000);
    stop.abort();
    await run;
  });
});
