// Correct programs that pglock used to fail (issue #23): a pool that pglock starved, and waits that
// held a snapshot for as long as they waited, which stalled VACUUM and CREATE INDEX CONCURRENTLY.
import pg from "pg";
import { createLocker, InvalidArgumentError } from "pglock";
import { describe, expect, it } from "vitest";
import { databaseUrl, makePool, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { program, run } from "./support/run.js";

describe("a pool the application shares with a Locker", () => {
  it("30 withLock calls whose work queries the same pool of 2 all complete", async () => {
    const pool = makePool({ max: 2 });
    const locker = createLocker(pool);
    try {
      const done = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          locker.withLock(
            `customer:${i % 3}:${uniqueName()}`.slice(0, 12),
            async () => (await pool.query("SELECT $1::int AS i", [i])).rows[0].i,
            { timeout: 6_000 },
          ),
        ),
      );
      expect(done).toEqual(Array.from({ length: 30 }, (_, i) => i));
      expect(locker.stats().sessions).toBeLessThanOrEqual(1);
    } finally {
      await locker.close();
    }
  });

  it("the same with 3 contended keys: every caller gets its turn", async () => {
    const pool = makePool({ max: 2 });
    const locker = createLocker(pool);
    const keys = [uniqueKey(), uniqueKey(), uniqueKey()];
    try {
      let inside = 0;
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          locker.withLock(
            keys[i % 3] as bigint,
            async () => {
              inside++;
              await pool.query("SELECT pg_sleep(0.01)");
              return i;
            },
            { timeout: 20_000 },
          ),
        ),
      );
      expect(results).toHaveLength(30);
      expect(inside).toBe(30);
    } finally {
      await locker.close();
    }
  });

  it("a pool of max 1, or a maxSessions that leaves the application nothing, is refused with the reason", () => {
    expect(() => createLocker(makePool({ max: 1 }))).toThrow(InvalidArgumentError);
    expect(() => createLocker(makePool({ max: 1 }))).toThrow(/max 1, so the Locker would take the connection/);
    expect(() => createLocker(makePool({ max: 3 }), { maxSessions: 3 })).toThrow(
      /options.maxSessions must leave the application one of the pool's 3 connections \(at most 2\), got 3/,
    );
    expect(() => createLocker(makePool({ max: 3 }), { maxSessions: 2 })).not.toThrow();
  });
});

describe("a wait holds no snapshot for long", () => {
  it("a Locker waiting for 6 s never shows a transaction older than deadlock_timeout + 1.5 s", async () => {
    const admin = makePool({ max: 2 });
    const app = uniqueName("snapshot");
    const holder = createLocker(makePool({ max: 3 }));
    const waiter = createLocker(makePool({ max: 3 }), { applicationName: app });
    const key = uniqueKey();
    const held = await holder.acquire(key);
    const waiting = waiter.acquire(key);
    const deadlockTimeoutMs = Number(
      (await admin.query("SELECT setting::int AS ms FROM pg_settings WHERE name = 'deadlock_timeout'")).rows[0].ms,
    );
    let oldestMs = 0;
    let seen = 0;
    let xmins = 0;
    const until = performance.now() + 6_000;
    while (performance.now() < until) {
      const { rows } = await admin.query(
        `SELECT extract(epoch FROM now() - xact_start) * 1000 AS age_ms, backend_xmin IS NOT NULL AS has_xmin
           FROM pg_stat_activity WHERE application_name LIKE $1 AND state = 'active' AND wait_event_type = 'Lock'`,
        [`${app} %`],
      );
      for (const row of rows) {
        seen++;
        if (row.has_xmin) xmins++;
        oldestMs = Math.max(oldestMs, Number(row.age_ms));
      }
      await sleep(100);
    }
    expect(seen).toBeGreaterThan(20); // the waiter was there to be seen
    expect(xmins).toBeGreaterThan(0); // a waiting statement does hold a snapshot, while it runs
    // One slice: at most deadlock_timeout + 1.5 s (Session.waitSliceMs), and room for a loaded machine.
    expect(oldestMs).toBeLessThan(deadlockTimeoutMs + 1_500 + 1_000);
    await held.release();
    const granted = await waiting;
    await granted.release();
    await Promise.all([holder.close(), waiter.close()]);
  });

  it("four instances migrate under pglock run with CREATE INDEX CONCURRENTLY: all exit 0", async () => {
    const admin = new pg.Client({ connectionString: databaseUrl() });
    await admin.connect();
    const table = `mig_${uniqueName("t").replace(/-/g, "_")}`;
    await admin.query(`CREATE TABLE ${table} (v int)`);
    await admin.query(`INSERT INTO ${table} SELECT generate_series(1, 1000)`);
    try {
      const [command, args] = program("src/cli/bin.ts");
      const key = uniqueName("migrations");
      const started = performance.now();
      const instances = await Promise.all(
        [0, 1, 2, 3].map(async (i) => {
          await sleep(i * 100);
          return run(
            command,
            [...args, "run", key, "--timeout", "2m", "--", process.execPath, "test/support/migrate.mjs", table],
            { DATABASE_URL: databaseUrl() },
            100_000,
          );
        }),
      );
      const elapsedMs = performance.now() - started;
      expect(instances.map((result) => [result.code, result.stderr])).toEqual(instances.map(() => [0, ""]));
      expect(instances.filter((result) => result.stdout === "migrated\n")).toHaveLength(1);
      expect(instances.filter((result) => result.stdout === "up to date\n")).toHaveLength(3);
      // Before issue #23: 120 s and three instances timed out. Now a few slices at most.
      expect(elapsedMs).toBeLessThan(45_000);
    } finally {
      await admin.query(`DROP TABLE ${table}`);
      await admin.end();
    }
  }, 110_000);
});
