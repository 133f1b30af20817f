// pglock through PgBouncer (`npm run test:pgbouncer`; needs the pgbouncer executable).
// Session pooling: everything works. Transaction pooling: session locks are unsafe, pglock says so
// where it can see it, and transaction-level locks work.
import pg from "pg";
import { createLocker, LockNotHeldError, newLock, withXactLock } from "pglock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../../src/cli/throwaway-postgres.js";
import { type PgBouncer, startPgBouncer } from "./fixture.js";

let server: ThrowawayPostgres;
let session: PgBouncer;
let transaction: PgBouncer;
const pools: pg.Pool[] = [];
const pool = (url: string, max = 4) => {
  const p = new pg.Pool({ connectionString: url, max });
  p.on("error", () => {});
  pools.push(p);
  return p;
};

beforeAll(async () => {
  server = await startThrowawayPostgres();
  session = await startPgBouncer(server.url, "session");
  transaction = await startPgBouncer(server.url, "transaction");
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await session?.stop();
  await transaction?.stop();
  await server?.stop();
});

describe("PgBouncer in session pooling", () => {
  it("Lock and Locker exclude each other and release as on a direct connection", async () => {
    const a = createLocker(pool(session.url), { maxSessions: 2 });
    const lock = await newLock(pool(session.url), "bouncer-session");
    try {
      const held = await a.acquire("bouncer-session");
      expect(await lock.lock()).toBe(false);
      await held.release();
      expect(await lock.lock()).toBe(true);
      expect(await a.tryAcquire("bouncer-session")).toBeNull();
      expect(await lock.unlock()).toBe(true);
      const waiting = a.acquire("bouncer-session", { timeout: 5_000 });
      await (await waiting).release();
      await expect(a.acquire("bouncer-other", { timeout: 100 }).then((h) => h.release())).resolves.toBeUndefined();
    } finally {
      await lock.close();
      await a.close();
    }
  });
});

describe("PgBouncer in transaction pooling", () => {
  it("a session lock released on another server session is a LockNotHeldError, not a silent success", async () => {
    const client = new pg.Client({ connectionString: transaction.url });
    const other = new pg.Client({ connectionString: transaction.url });
    await client.connect();
    await other.connect();
    try {
      const lock = await newLock(client, "bouncer-transaction");
      expect(await lock.lock()).toBe(true); // on server connection A, which then goes back to PgBouncer
      await other.query("BEGIN"); // takes A (most recently used) and keeps it for the transaction
      await other.query("SELECT 1");
      const error = await lock.unlock().catch((e: unknown) => e); // runs on server connection B
      expect(error).toBeInstanceOf(LockNotHeldError);
      expect((error as Error).message).toMatch(/transaction mode/);
      await other.query("ROLLBACK");
      await lock.close();
    } finally {
      await client.end();
      await other.end();
    }
  });

  it("transaction-level locks work: they live and die with the transaction", async () => {
    const p = pool(transaction.url, 6);
    const [c1, c2] = [await p.connect(), await p.connect()];
    try {
      await c1.query("BEGIN");
      await withXactLock(c1, "bouncer-xact", async () => {});
      await c2.query("BEGIN");
      await expect(withXactLock(c2, "bouncer-xact", () => {}, { timeout: 200 })).rejects.toMatchObject({
        code: "ERR_PGLOCK_TIMEOUT",
      });
      const second = withXactLock(c2, "bouncer-xact", () => "granted after commit", { timeout: 5_000 });
      await c1.query("COMMIT");
      expect(await second).toBe("granted after commit");
      await c2.query("COMMIT");
    } finally {
      c1.release();
      c2.release();
    }
  });
});
