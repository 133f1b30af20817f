// pglock through PgBouncer (`npm run test:pgbouncer`; needs the pgbouncer executable).
// Session pooling: everything works. Transaction pooling: session locks are unsafe, pglock says so
// where it can see it, transaction-level locks work, and the lease Locker keeps the whole contract.
import pg from "pg";
import {
  ConnectionError,
  createLeaseLocker,
  createLocker,
  inspectLocks,
  LockLostError,
  newLock,
  withXactLock,
} from "pglock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../../tools/throwaway-postgres.js";
import { contractCases, leaseLockers } from "../support/contract.js";
import { eventually, sleep } from "../support/db.js";
import { leaseTurns } from "../support/lease-turns.js";
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
  it("a lock statement that reaches another server session does nothing there, and says why", async () => {
    const client = new pg.Client({ connectionString: transaction.url });
    const other = new pg.Client({ connectionString: transaction.url });
    const direct = pool(server.url, 2);
    await client.connect();
    await other.connect();
    try {
      const lock = await newLock(client, "bouncer-transaction"); // opened on server session A
      expect(await lock.lock()).toBe(true); // on A, which then goes back to PgBouncer
      await other.query("BEGIN"); // takes A (most recently used) and keeps it for the transaction
      const [{ pid: a }] = (await other.query("SELECT pg_backend_pid() AS pid")).rows;
      // pglock's unlock now reaches B, the other server connection, where it must do nothing.
      const error = await lock.unlock().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectionError);
      expect((error as Error).message).toMatch(/not \d+ where pglock's locks are: .*pool_mode = transaction/);
      expect((error as Error).message).toContain(`not ${a} where`);
      // Nothing happened on B: the lock is still A's, as the error says.
      const holders = await inspectLocks(direct, { key: "bouncer-transaction" });
      expect(holders.map((row) => row.pid)).toEqual([a]);
      await expect(lock.lock()).rejects.toBeInstanceOf(ConnectionError); // the Lock's session is over
      await other.query("ROLLBACK");
      await lock.close();
    } finally {
      await client.end();
      await other.end();
    }
  });

  it("a Locker whose connection moves to another server session reports its locks lost, and leaves none behind", async () => {
    const locker = createLocker(pool(transaction.url, 2), { maxSessions: 1 });
    const other = new pg.Client({ connectionString: transaction.url });
    other.on("error", () => {}); // its server session is ended under it
    await other.connect();
    try {
      const handle = await locker.acquire("bouncer-moved"); // on server session A
      await other.query("BEGIN"); // pins A; the Locker's next statement goes to B
      await other.query("SELECT 1");
      // This statement reaches B: it does nothing there and ends the session (the Locker may then
      // open a new one, on whichever server session, and carry on there).
      await locker.tryAcquire("bouncer-moved-2").then(
        (next) => next?.release(),
        () => {},
      );
      await eventually(() => handle.signal.aborted);
      expect(handle.signal.reason).toBeInstanceOf(LockLostError);
      expect(String((handle.signal.reason as Error).cause)).toMatch(/pool_mode = transaction/);
      // The lock is not left behind on A (issue #26): A was ended, the other client's transaction
      // on it with it, and the key is free for anyone.
      await other.query("ROLLBACK").catch(() => {});
      const direct = createLocker(pool(session.url, 2));
      try {
        await eventually(async () => {
          const free = await direct.tryAcquire("bouncer-moved");
          await free?.release();
          return free !== null;
        }, 10_000);
      } finally {
        await direct.close();
      }
    } finally {
      await other.end().catch(() => {});
      await locker.close();
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

describe("the lease Locker in transaction pooling", () => {
  it("takes turns across 3 processes as on a direct connection (issue #28: the p99 wait was 30.5 s)", async () => {
    const { median, longest, means } = await leaseTurns(transaction.url, `bouncer-turns-${Date.now()}`);
    console.log(`lease waits behind PgBouncer, ms: median ${Math.round(median)}, longest ${Math.round(longest)}`);
    expect(longest / median).toBeLessThan(3);
    expect(Math.max(...means) / Math.min(...means)).toBeLessThan(2);
  }, 120_000);

  it("keeps its lease where the session Locker lost its lock (the test above): no statement needs a session", async () => {
    const a = createLeaseLocker(pool(transaction.url, 2), { ttlMs: 2_000, renewEveryMs: 100 });
    const b = createLeaseLocker(pool(transaction.url, 2));
    const other = new pg.Client({ connectionString: transaction.url });
    await other.connect();
    try {
      const handle = await a.acquire("bouncer-lease"); // on some server session
      await other.query("BEGIN"); // pins one server session: a's statements now land on the other one
      await other.query("SELECT 1");
      await sleep(1_000); // ten renewals, on whichever server session PgBouncer gives
      expect(handle.signal.aborted).toBe(false);
      expect(await b.tryAcquire("bouncer-lease")).toBeNull();
      await other.query("ROLLBACK");
      await handle.release();
      await (await b.acquire("bouncer-lease", { timeout: 5_000 })).release();
    } finally {
      await other.end();
      await a.close();
      await b.close();
    }
  });
});

describe("contract: the lease Locker through PgBouncer in transaction pooling", () => {
  contractCases(
    leaseLockers(
      () => ({ db: pool(transaction.url, 5), end: async () => {} }),
      () => pool(server.url, 1),
    ),
  );
});
