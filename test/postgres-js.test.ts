// What is particular to the postgres.js driver: each pglock session is a postgres.js instance of its
// own (max: 1) built from the caller's options, so the caller's pool settings cannot end a session
// that holds locks, and a session's end is seen even while it is idle.
import { ConnectionError, createLocker, inspectLocks, newLock } from "pglock";
import { describe, expect, it } from "vitest";
import { type PostgresJsSql, postgresJsDriver } from "../src/session/postgres-js.js";
import {
  eventually,
  locksOnKey,
  makePool,
  makeSql,
  sessionsNamed,
  sleep,
  uniqueKey,
  uniqueName,
} from "./support/db.js";

describe("postgres.js driver", () => {
  const admin = makePool({ max: 2 });

  it("the caller's max_lifetime and idle_timeout do not end a session that holds a lock", async () => {
    const sql = makeSql({ max_lifetime: 1, idle_timeout: 1 });
    const key = uniqueKey();
    const locker = createLocker(sql);
    const lock = await newLock(sql, uniqueKey());
    try {
      const handle = await locker.acquire(key);
      expect(await lock.lock()).toBe(true);
      await sleep(2_500); // both limits (1 s) have passed twice
      expect(handle.signal.aborted).toBe(false);
      expect(await locksOnKey(admin, key)).toHaveLength(1);
      expect(await locksOnKey(admin, lock.key.id as bigint)).toHaveLength(1);
      expect(await lock.unlock()).toBe(true);
      await handle.release();
    } finally {
      await lock.close();
      await locker.close();
    }
  });

  it("an idle session ended by the server is a loss at once, and the Locker goes on with a new session", async () => {
    const app = uniqueName();
    const locker = createLocker(makeSql(), { applicationName: app });
    try {
      const key = uniqueKey();
      const handle = await locker.acquire(key);
      const [pid] = await sessionsNamed(admin, app);
      await admin.query("SELECT pg_terminate_backend($1)", [pid]);
      await eventually(() => handle.signal.aborted);
      expect(handle.signal.reason).toMatchObject({ code: "ERR_PGLOCK_LOST" });
      // The next acquire runs on a new server session, and pglock knows it.
      const again = await locker.acquire(key);
      const [next] = await sessionsNamed(admin, app);
      expect(next).not.toBe(pid);
      expect((await locksOnKey(admin, key)).map((row) => row.pid)).toEqual([next]);
      await again.release();
    } finally {
      await locker.close();
    }
  });

  it("leaves the caller's instance alone: its connections, its parameters", async () => {
    const sql = makeSql({ max: 1 });
    await sql`SELECT 1`;
    const before = sql.parameters.application_name;
    expect(before).toBe("postgres.js");
    const app = uniqueName();
    const locker = createLocker(sql, { applicationName: app });
    try {
      const handles = await Promise.all(Array.from({ length: 3 }, () => locker.acquire(uniqueKey())));
      const mine = (await inspectLocks(sql)).filter((lock) => lock.owner?.application === app);
      expect(mine.map((lock) => lock.key.id).sort()).toEqual(handles.map((handle) => handle.key.id).sort());
      // pglock's sessions are not the caller's single connection, which stays free for the caller.
      const rows = await sql`SELECT 1 AS n`;
      expect(rows[0]?.n).toBe(1);
      expect(sql.parameters.application_name).toBe(before);
      await Promise.all(handles.map((handle) => handle.release()));
    } finally {
      await locker.close();
    }
  });

  it("no connection leaks: 30 Locks opened and closed leave no session behind", async () => {
    const app = uniqueName();
    const sql = makeSql();
    const locks = await Promise.all(
      Array.from({ length: 30 }, () => newLock(sql, uniqueKey(), { applicationName: app })),
    );
    expect(await sessionsNamed(admin, app)).toHaveLength(30);
    await Promise.all(locks.map((lock) => lock.lock()));
    await Promise.all(locks.map((lock) => lock.close()));
    await eventually(async () => (await sessionsNamed(admin, app)).length === 0);
  });

  it("a statement that sent a row and then failed does not shift the next result (postgres.js row counter)", async () => {
    const connection = await postgresJsDriver(makeSql() as unknown as PostgresJsSql).connect();
    try {
      // Row 1 is sent, row 2 divides by zero: DataRow, then ErrorResponse.
      const failing = { text: "SELECT 1 / (2 - x) AS y FROM (VALUES (1), (2)) AS v(x)", values: [] };
      await expect(connection.query(failing)).rejects.toMatchObject({ code: "22012" });
      expect(await connection.query({ text: "SELECT $1::int4 AS n", values: [7] })).toEqual([{ n: 7 }]);
    } finally {
      await connection.release();
    }
  });

  it("an unreachable database is a ConnectionError, not a crash", async () => {
    const sql = makeSql({ host: "127.0.0.1", port: 1, connect_timeout: 2 });
    const error = await newLock(sql, 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as Error).message).toMatch(/could not connect to PostgreSQL/);
    const locker = createLocker(sql);
    await expect(locker.acquire(1)).rejects.toBeInstanceOf(ConnectionError);
    await locker.close();
  });
});
