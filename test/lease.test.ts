// What only leases have: a TTL on the server's clock, renewal, the holder's deadline, the table.
// The behaviour leases share with session locks is in contract.test.ts.

import {
  ClosedError,
  ConnectionError,
  createLeaseLocker,
  InvalidArgumentError,
  type LeaseLocker,
  type LeaseLockerOptions,
  LockExpiredError,
  LockLostError,
  LockNotHeldError,
  leaseTableSql,
  type PoolDatabase,
  type QueryFunction,
} from "pglock";
import { afterEach, describe, expect, it } from "vitest";
import { databaseUrl, eventually, makePool, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { leaseTurns } from "./support/lease-turns.js";
import { expireLeases, queryFunction } from "./support/leases.js";

const pool = makePool({ max: 10 });
const lockers: LeaseLocker[] = [];
afterEach(async () => {
  await Promise.all(lockers.splice(0).map((locker) => locker.close()));
});

function lease(options: LeaseLockerOptions = {}, db: PoolDatabase | QueryFunction = pool): LeaseLocker {
  const locker = createLeaseLocker(db, options);
  lockers.push(locker);
  return locker;
}

/** The server's view of a holder's entry: ms until it expires on the server's clock (negative: expired). */
async function serverMsLeft(key: bigint, holderPrefix: string, table = "pglock_leases"): Promise<number | undefined> {
  const { rows } = await pool.query(
    `SELECT (h.value #>> '{}')::int8 - (extract(epoch FROM now()) * 1000)::int8 AS left
       FROM ${table}, jsonb_each(holders) AS h WHERE lock_key = $1 AND h.key LIKE $2`,
    [String(key), `${holderPrefix} %`],
  );
  return rows[0] === undefined ? undefined : Number(rows[0].left);
}

/** A query function over the pool that fails, as a cut network would, while `broken.on`. */
function breakable() {
  const broken = { on: false };
  const run = queryFunction(pool);
  const query = (text: string, params: unknown[]) =>
    broken.on ? Promise.reject(new Error("connect ECONNREFUSED (simulated)")) : run(text, params);
  return { query, broken };
}

describe("lease Locker", () => {
  it("renewal keeps a lease held for many TTLs; nobody else gets it meanwhile", async () => {
    // A TTL of 1 s, with room for a loaded machine (CI runs 4 test files at a time on 2 CPUs): a
    // 300 ms TTL expired there once while renewals queued behind other work.
    const a = lease({ ttlMs: 1_000, renewEveryMs: 100 });
    const b = lease({ ttlMs: 1_000 });
    const key = uniqueKey();
    const held = await a.acquire(key);
    for (let i = 0; i < 10; i++) {
      await sleep(300);
      expect(await b.tryAcquire(key)).toBeNull();
    }
    expect(held.signal.aborted).toBe(false);
    await held.release();
    await (await b.acquire(key, { timeout: 5_000 })).release();
  });

  it("the holder is told before the server lets anyone else take the lease", async () => {
    const app = uniqueName();
    const { query, broken } = breakable();
    // The margin leaves the measurement in the abort listener time to reach the server on a loaded machine.
    const a = lease({ applicationName: app, ttlMs: 3_000, renewEveryMs: 100, expiryMarginMs: 1_500 }, query);
    const key = uniqueKey();
    const held = await a.acquire(key);
    broken.on = true; // renewals fail from now on
    let leftWhenTold: number | undefined;
    held.signal.addEventListener("abort", () => {
      // Measured on the server, at the moment the holder learns of it.
      void serverMsLeft(key, app).then((left) => {
        leftWhenTold = left;
      });
    });
    await eventually(() => leftWhenTold !== undefined, 5_000);
    expect(held.signal.reason).toBeInstanceOf(LockLostError);
    expect((held.signal.reason as Error).cause).toBeInstanceOf(ConnectionError);
    expect(leftWhenTold).toBeGreaterThan(0);
    // Once it expires on the server, another holder may take it.
    const b = lease();
    await (await b.acquire(key, { timeout: 5_000 })).release();
    broken.on = false;
    await held.release(); // lost already: resolves
    expect(a.stats()).toMatchObject({ held: 0, waiting: 0 });
  });

  it("a renewal never takes back a lease that expired and was granted to another holder", async () => {
    const app = uniqueName();
    const a = lease({ applicationName: app, ttlMs: 60_000, renewEveryMs: 100 });
    const b = lease({ applicationName: uniqueName(), ttlMs: 60_000 });
    const key = uniqueKey();
    const first = await a.acquire(key);
    // a stalls past its TTL (played on the server), and b is granted the key.
    await expireLeases(pool, app);
    const second = await b.acquire(key, { timeout: 5_000 });
    await eventually(() => first.signal.aborted);
    expect(first.signal.reason).toBeInstanceOf(LockLostError);
    expect(String(first.signal.reason)).toMatch(/no longer held when renewed/);
    // b still holds it, alone, and a did not re-acquire it behind anyone's back.
    expect(await a.tryAcquire(key)).toBeNull();
    expect(await serverMsLeft(key, app)).toBeUndefined();
    expect(second.signal.aborted).toBe(false);
    expect((second.fencingToken as bigint) > (first.fencingToken as bigint)).toBe(true);
    await second.release();
  });

  it("a grant that commits after its caller gave up is taken back, not left to block others for a TTL", async () => {
    const run = queryFunction(pool);
    // The grant reaches the server 300 ms late; the clean-up after the timeout does not.
    const slow = async (text: string, params: unknown[]) => {
      if (text.startsWith("INSERT")) await sleep(300);
      return run(text, params);
    };
    const a = lease({ ttlMs: 60_000 }, slow);
    const key = uniqueKey();
    await expect(a.acquire(key, { timeout: 50 })).rejects.toMatchObject({ code: "ERR_PGLOCK_TIMEOUT" });
    // The grant commits some 250 ms later; its entry must then be removed at once, not after 60 s.
    await sleep(400);
    const b = lease({ ttlMs: 60_000 });
    let taken: Awaited<ReturnType<LeaseLocker["tryAcquire"]>> = null;
    await eventually(async () => {
      taken = await b.tryAcquire(key);
      return taken !== null;
    });
    await (taken as { release(): Promise<void> } | null)?.release();
  });

  it("fencing tokens come with every grant, increase per key, and carry the timeline above bit 48", async () => {
    const a = lease();
    const key = uniqueKey();
    const tokens: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      const handle = await a.acquire(key);
      tokens.push(handle.fencingToken as bigint);
      await handle.release();
    }
    for (let i = 1; i < tokens.length; i++) expect((tokens[i] as bigint) > (tokens[i - 1] as bigint)).toBe(true);
    const { rows } = await pool.query("SELECT timeline_id FROM pg_control_checkpoint()");
    expect((tokens[0] as bigint) >> 48n).toBe(BigInt(rows[0].timeline_id));
  });

  it("holders in several Lockers on separate pools never overlap, and no increment is lost", async () => {
    const key = uniqueKey();
    const pools = Array.from({ length: 4 }, () => makePool({ max: 3 }));
    const contenders = pools.map((p) => lease({ ttlMs: 10_000, maxPollMs: 20 }, p));
    let inside = 0;
    let overlaps = 0;
    let counter = 0;
    const tokens: bigint[] = [];
    await Promise.all(
      contenders.map(async (locker) => {
        for (let i = 0; i < 15; i++) {
          const handle = await locker.acquire(key, { timeout: 30_000 });
          try {
            inside++;
            if (inside > 1) overlaps++;
            tokens.push(handle.fencingToken as bigint);
            const read = counter;
            await sleep(1);
            counter = read + 1;
            inside--;
          } finally {
            await handle.release();
          }
        }
      }),
    );
    expect(overlaps).toBe(0);
    expect(counter).toBe(60);
    // Pushed inside the critical section, so in the order of grants: each above the one before.
    for (let i = 1; i < tokens.length; i++) expect((tokens[i] as bigint) > (tokens[i - 1] as bigint)).toBe(true);
  });

  it("creates its table on first use, or takes one made from leaseTableSql()", async () => {
    const table = `lease_${uniqueName("t").replace(/-/g, "_")}`;
    const fresh = lease({ table });
    await (await fresh.acquire(1)).release();
    const migrated = `lease_${uniqueName("m").replace(/-/g, "_")}`;
    for (const statement of leaseTableSql(migrated).split(";\n")) await pool.query(statement);
    const { rows } = await pool.query("SELECT to_regclass($1) AS t, to_regclass($2) AS s", [
      migrated,
      `${migrated}_token`,
    ]);
    expect(rows[0]).toEqual({ t: migrated, s: `${migrated}_token` });
    await (await lease({ table: migrated }).acquire(1)).release();
    await pool.query(`DROP TABLE ${table}, ${migrated}; DROP SEQUENCE ${table}_token, ${migrated}_token`);
  });

  it("rows whose holders all expired are deleted by a later Locker's grant, with no job to run", async () => {
    const table = `lease_${uniqueName("c").replace(/-/g, "_")}`;
    const app = uniqueName();
    const a = lease({ table, applicationName: app, ttlMs: 60_000 });
    const stale = await Promise.all([uniqueKey(), uniqueKey(), uniqueKey()].map((key) => a.acquire(key)));
    await expireLeases(pool, app, table);
    const keys = stale.map((handle) => handle.key.identity);
    // Expired for longer than the longest TTL used on the table (60 s here): clean-up keeps a row that long.
    await pool.query(`UPDATE ${table} SET expires_at = now() - interval '2 minutes' WHERE lock_key = ANY($1)`, [keys]);
    await (await lease({ table }).acquire(uniqueKey())).release(); // a new Locker cleans up after its first grant
    // The three stale rows are gone (the new grant's own row stays until its expiry, as every released row).
    await eventually(
      async () =>
        (await pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE lock_key = ANY($1)`, [keys])).rows[0].n === 0,
    );
    await Promise.all(stale.map((handle) => handle.release().catch(() => {})));
    await pool.query(`DROP TABLE ${table}; DROP SEQUENCE ${table}_token`);
  });

  it("release says so when the table no longer has the lease", async () => {
    const a = lease({ ttlMs: 60_000 });
    const key = uniqueKey();
    const held = await a.acquire(key);
    await pool.query("DELETE FROM pglock_leases WHERE lock_key = $1", [String(key)]);
    await expect(held.release()).rejects.toBeInstanceOf(LockNotHeldError);
  });

  it("extend(ms) renews at once and moves atMostMs; a lease that is gone rejects it (issue #25)", async () => {
    const app = uniqueName("lease-extend");
    const [a, b] = [lease({ applicationName: app, ttlMs: 3_000 }), lease()];
    const key = uniqueKey();
    const long = await a.acquire(key, { atMostMs: 600 });
    await sleep(300);
    await long.extend(1_500); // the job needs longer than it first said
    await sleep(600); // past the first atMostMs
    expect(long.signal.aborted).toBe(false);
    expect(await b.tryAcquire(key)).toBeNull();
    // The server's expiry was pushed by the renewal: a full TTL from the extend, not from the grant.
    expect(await serverMsLeft(key, app)).toBeGreaterThan(2_000);
    await eventually(() => long.signal.aborted); // the new deadline, 1.5 s after the extend
    expect(long.signal.reason).toBeInstanceOf(LockExpiredError);
    expect(await b.tryAcquire(key)).not.toBeNull();
    await expect(long.extend(1_000)).rejects.toBeInstanceOf(LockExpiredError);
    await expect(long.extend(0)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("a query function may resolve { rows }; anything else is a typed error", async () => {
    const withRows = lease({}, (text: string, params: unknown[]) => pool.query(text, params));
    await (await withRows.acquire(uniqueKey())).release();
    const wrong = lease({}, (async () => 42) as never);
    await expect(wrong.acquire(uniqueKey())).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it("close() gives back every lease and rejects waiters with ClosedError", async () => {
    const app = uniqueName();
    const a = lease({ applicationName: app });
    const b = lease();
    const key = uniqueKey();
    const mine = await a.acquire(uniqueKey());
    const theirs = await b.acquire(key);
    const waiting = a.acquire(key).catch((error: unknown) => error);
    await eventually(() => a.stats().waiting === 1);
    await a.close();
    expect(await waiting).toBeInstanceOf(ClosedError);
    expect(mine.signal.reason).toBeInstanceOf(LockLostError);
    const { rows } = await pool.query(
      "SELECT count(*)::int AS n FROM pglock_leases, jsonb_object_keys(holders) AS k WHERE k LIKE $1",
      [`${app} %`],
    );
    expect(rows[0].n).toBe(0);
    await theirs.release();
  });

  it("bad options are typed errors that name the value and the rule", () => {
    expect(() => createLeaseLocker(pool, { ttlMs: 50 })).toThrow(
      /ttlMs must be an integer in \[100, 86400000\], got 50/,
    );
    expect(() => createLeaseLocker(pool, { ttlMs: 1_000, renewEveryMs: 900 })).toThrow(
      /renewEveryMs must be at least 1 and less than ttlMs - expiryMarginMs \(1000 - 200\).*got 900/,
    );
    expect(() => createLeaseLocker(pool, { table: "Leases; DROP" })).toThrow(InvalidArgumentError);
    expect(() => createLeaseLocker({ query: 1 } as never)).toThrow(
      /expected a pg.Pool, a postgres.js sql, a Bun SQL or a query function/,
    );
    expect(() => createLeaseLocker(pool, { maxPollMs: -1 })).toThrow(InvalidArgumentError);
  });
});

describe("lease waits are fair across processes (issue #28)", () => {
  it("3 processes × 3 tasks taking one key in turns: no wait is far above the typical one", async () => {
    const { median, longest, means } = await leaseTurns(databaseUrl(), uniqueName("fair"));
    console.log(
      `lease waits, ms: median ${Math.round(median)}, longest ${Math.round(longest)}; per process mean ${means.map(Math.round).join(" ")}`,
    );
    // In turn, every wait is about the others' holds: the longest is near the median, and no process
    // waits much longer than another. (Before the queue: median 212 ms, longest 5.8 s: hand-overs stayed
    // in one process while the others' polls backed off.)
    expect(longest / median).toBeLessThan(3);
    expect(Math.max(...means) / Math.min(...means)).toBeLessThan(2);
  }, 120_000);
});
