// The four library failures an adversarial run found (issue #18), each reproduced as it was seen,
// and the crash the chaos suite found (issue #13).

import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { ClosedError, createLocker, LockTimeoutError, newLock, type PoolDatabase } from "pglock";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseUrl, eventually, locksOnKey, makePool, makeSql, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { program, run } from "./support/run.js";

/** How long a call took, and what it settled with. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const started = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - started, value };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

/** A server that accepts TCP connections and never says a word. */
async function silentServer(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `postgres://nobody:secret@127.0.0.1:${port}/none`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("timeouts and aborts apply while pglock waits for a connection", () => {
  const silent = silentServer();
  const ends: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(ends.map((end) => end()));
    await (await silent).close();
  });

  it("pg.Pool whose every client the application holds: timeout, signal, tryAcquire and close() all return", async () => {
    const pool = makePool({ max: 2 });
    const theAppsClient = await pool.connect();
    const theAppsOtherClient = await pool.connect();
    const locker = createLocker(pool);
    try {
      const timedOut = await timed(locker.acquire(uniqueKey(), { timeout: 300 }));
      expect(timedOut.error).toBeInstanceOf(LockTimeoutError);
      expect(timedOut.ms).toBeLessThan(5_000);
      const aborted = await timed(locker.acquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((aborted.error as Error).name).toBe("TimeoutError");
      expect(aborted.ms).toBeLessThan(5_000);
      const tried = await timed(locker.tryAcquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((tried.error as Error).name).toBe("TimeoutError");
      const pending = locker.acquire(uniqueKey()).catch((error: unknown) => error);
      await sleep(100);
      const closed = await timed(locker.close());
      expect(closed.ms).toBeLessThan(5_000);
      expect(await pending).toBeInstanceOf(ClosedError);
    } finally {
      theAppsClient.release();
      theAppsOtherClient.release();
      await locker.close();
    }
    // The connections pglock asked for and gave up on come back to the pool once they open.
    await eventually(() => pool.totalCount - pool.idleCount === 0);
  });

  it("pool max 2 held by the application: 50 withLock calls with a timeout all reject with LockTimeoutError", async () => {
    // The deadlock users build (withLock's fn queries the pool the Locker's sessions come from) shows
    // as these timeouts; the cure is a Locker with fewer sessions than the pool, or a pool of its own.
    const pool = makePool({ max: 2 });
    const held = await Promise.all([pool.connect(), pool.connect()]);
    const locker = createLocker(pool);
    try {
      const started = performance.now();
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) => locker.withLock(`busy-pool-${i}`, () => "ran", { timeout: 500 })),
      );
      expect(performance.now() - started).toBeLessThan(10_000);
      for (const result of results) {
        expect(result.status).toBe("rejected");
        if (result.status === "rejected") expect(result.reason).toBeInstanceOf(LockTimeoutError);
      }
    } finally {
      for (const client of held) client.release();
      await locker.close();
    }
  });

  const silentHandles = {
    "pg.Pool": (url: string): PoolDatabase => makePool({ connectionString: url }),
    "postgres.js": (url: string): PoolDatabase => {
      const sql = postgres(url, { connect_timeout: 60, onnotice: () => {} });
      ends.push(() => sql.end({ timeout: 0 }));
      return sql;
    },
  };

  for (const [name, connect] of Object.entries(silentHandles)) {
    it(`a server that accepts TCP and never answers (${name}): timeout, signal and close() apply`, async () => {
      const locker = createLocker(connect((await silent).url));
      const timedOut = await timed(locker.acquire(uniqueKey(), { timeout: 300 }));
      expect(timedOut.error).toBeInstanceOf(LockTimeoutError);
      expect(timedOut.ms).toBeLessThan(5_000);
      const aborted = await timed(locker.tryAcquire(uniqueKey(), { signal: AbortSignal.timeout(300) }));
      expect((aborted.error as Error).name).toBe("TimeoutError");
      expect((await timed(locker.close())).ms).toBeLessThan(5_000);
    });
  }
});

describe("the server's statement_timeout and lock_timeout do not govern pglock's waits", () => {
  // A role with both set to 1 s, as production often sets them per role or database.
  const role = `pglock_timeouts_${randomBytes(4).toString("hex")}`;
  const admin = makePool({ max: 2 });
  let url: string;
  beforeAll(async () => {
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'timeouts'`);
    await admin.query(`ALTER ROLE ${role} SET statement_timeout = '1s'`);
    await admin.query(`ALTER ROLE ${role} SET lock_timeout = '1s'`);
    const parsed = new URL(databaseUrl());
    parsed.username = role;
    parsed.password = "timeouts";
    url = parsed.toString();
  });
  afterAll(async () => {
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [role]);
    await eventually(async () => {
      const { rows } = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1", [role]);
      return rows[0].n === 0;
    });
    await admin.query(`DROP ROLE ${role}`);
  });

  const handles = {
    "pg.Pool": (): PoolDatabase => makePool({ connectionString: url }),
    "postgres.js": (): PoolDatabase => makeSql({ host: new URL(url).hostname, username: role, password: "timeouts" }),
  };

  for (const [name, connect] of Object.entries(handles)) {
    it(`${name}: acquire waits for its own timeout, a Lock for its signal, an election keeps campaigning`, async () => {
      const key = uniqueKey();
      const holder = createLocker(makePool());
      const locker = createLocker(connect());
      try {
        const held = await holder.acquire(key);
        const timedOut = await timed(locker.acquire(key, { timeout: 2_500 }));
        expect(timedOut.error).toBeInstanceOf(LockTimeoutError);
        expect((timedOut.error as LockTimeoutError).timeoutMs).toBe(2_500);
        expect(timedOut.ms).toBeGreaterThan(2_300);
        await using lock = await newLock(connect(), key);
        const aborted = await timed(lock.waitAndLock({ signal: AbortSignal.timeout(2_000) }));
        expect((aborted.error as Error).name).toBe("TimeoutError");
        expect(aborted.ms).toBeGreaterThan(1_800);

        // The follower campaigns for longer than statement_timeout, then leads when the leader steps down.
        const election = locker.leaderElection(key);
        const stop = new AbortController();
        const elected = new Promise<void>((resolve) => election.once("elected", () => resolve()));
        const running = election.run(
          async (signal) => {
            await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
          },
          { signal: stop.signal },
        );
        await sleep(2_500);
        expect(election.isLeader).toBe(false);
        await held.release();
        await elected;
        // This role may not use the tables (they belong to another role): it elects by the lock alone,
        // and says so rather than report nobody.
        await expect(election.leader()).rejects.toThrow(/permission denied/);
        stop.abort();
        await running;
      } finally {
        await locker.close();
        await holder.close();
      }
    });
  }

  it("the pool's connections get the role's timeouts back when pglock gives them back", async () => {
    const pool = makePool({ connectionString: url, max: 2 });
    const locker = createLocker(pool, { idleMs: 0 });
    const held = await locker.acquire(uniqueKey());
    await held.release();
    await locker.close();
    const { rows } = await pool.query(
      "SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l",
    );
    expect(rows[0]).toEqual({ s: "1s", l: "1s" });
  });

  it("pglock run --wait waits past the server's statement_timeout", async () => {
    const name = uniqueName("cli-timeouts");
    const holder = createLocker(makePool());
    const held = await holder.acquire(name);
    setTimeout(() => void held.release(), 2_500);
    const [command, args] = program("src/cli/bin.ts");
    const result = await run(command, [...args, "run", name, "--wait", "--", "echo", "ran"], { DATABASE_URL: url });
    await holder.close();
    expect(result).toMatchObject({ code: 0, stdout: "ran\n" });
  });
});

describe("the ms options: 0 means none of it", () => {
  it("probeTimeoutMs 0 is no deadline: probing goes on and held locks stay held", async () => {
    const pool = makePool();
    const locker = createLocker(pool, { keepaliveMs: 50, probeTimeoutMs: 0 });
    try {
      const key = uniqueKey();
      const held = await locker.acquire(key);
      await sleep(1_000); // twenty probes; each once dropped every lock ("within 0 ms")
      expect(held.signal.aborted).toBe(false);
      expect((await locksOnKey(pool, key)).filter((row) => row.granted)).toHaveLength(1);
      // A session that really ends is still noticed.
      const [row] = await locksOnKey(pool, key);
      await pool.query("SELECT pg_terminate_backend($1)", [row?.pid]);
      await eventually(() => held.signal.aborted, 5_000);
    } finally {
      await locker.close();
    }
  });
});

describe("a connection that fails while pg-pool hands it over (issue #13's chaos crash)", () => {
  it("rejects the acquire with ConnectionError, and the process does not crash", async () => {
    // Bounded below the test's own timeout, so a hung child fails with what it printed.
    const result = await run(...program("test/support/handover-child.ts"), { DATABASE_URL: databaseUrl() }, 45_000);
    expect(result.signal, result.stdout).toBeNull();
    expect(result.stderr).not.toContain("Unhandled 'error' event");
    expect(result.stdout).toContain("locker: rejected ERR_PGLOCK_CONNECTION");
    expect(result.stdout).toContain("own checkout: query failed");
    expect(result.code).toBe(0);
  });
});
