// How long a vanished or stuck client can keep a lock, and who learns first (issue #14).
import pg from "pg";
import { ConnectionError, createLocker, InvalidArgumentError, LockLostError, newLock } from "pglock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { liveness } from "../src/liveness.js";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../tools/throwaway-postgres.js";
import { databaseUrl, eventually, locksOnKey, makePool, uniqueKey } from "./support/db.js";
import { FaultProxy } from "./support/fault-proxy.js";

describe("the liveness bound", () => {
  it("derives the server's keepalive from it, and refuses combinations that would free a lock before its holder is told", () => {
    expect(liveness({}, "createLocker")).toEqual({
      keepaliveMs: 5_000,
      probeTimeoutMs: 3_000,
      serverSettings: [
        ["tcp_keepalives_idle", "10"],
        ["tcp_keepalives_interval", "2"],
        ["tcp_keepalives_count", "4"],
        ["tcp_user_timeout", "18000"],
        ["client_connection_check_interval", "2000"],
      ],
    });
    // The holder is told within keepalive + probe timeout of a cut; the server frees the lock no
    // sooner than serverKeepaliveMs - keepaliveMs after it: 2 × 10000 + 5000 + 2000 = 27000 needed.
    expect(() =>
      liveness({ keepaliveMs: 10_000, probeTimeoutMs: 5_000, serverKeepaliveMs: 26_000 }, "newLock"),
    ).toThrow(InvalidArgumentError);
    expect(() =>
      liveness({ keepaliveMs: 10_000, probeTimeoutMs: 5_000, serverKeepaliveMs: 26_000 }, "newLock"),
    ).toThrow(/serverKeepaliveMs \(26000\) must be at least 2 × keepaliveMs \+ probeTimeoutMs \+ 2000 = 27000/);
    // Unset, it grows with the client's timings instead of refusing them.
    const slow = liveness({ keepaliveMs: 10_000, probeTimeoutMs: 5_000 }, "createLocker");
    expect(slow.serverSettings.find(([name]) => name === "tcp_user_timeout")?.[1]).toBe("27000");
    expect(liveness({ serverKeepaliveMs: 0 }, "createLocker").serverSettings).toEqual([]);
    expect(() => liveness({ serverKeepaliveMs: 3_000 }, "createLocker")).toThrow(/0 \(off\) or at least 5000/);
    expect(() => createLocker(makePool(), { serverKeepaliveMs: 9_000 })).toThrow(InvalidArgumentError);
  });
});

describe("a Lock is told", () => {
  it("its signal aborts with LockLostError when its session is terminated", async () => {
    const admin = makePool({ max: 1 });
    const key = uniqueKey();
    await using lock = await newLock(makePool(), key);
    expect(await lock.lock()).toBe(true);
    const [holder] = await locksOnKey(admin, key);
    await admin.query("SELECT pg_terminate_backend($1)", [holder?.pid]);
    await eventually(() => lock.signal.aborted, 5_000);
    expect(lock.signal.reason).toBeInstanceOf(LockLostError);
    await expect(lock.lock()).rejects.toBeInstanceOf(ConnectionError);
  });
});

describe("what pglock abandons, it ends on the server", () => {
  it("a silent connection: the holder is told within keepalive + probe timeout, and the server frees the lock about a second later", async () => {
    // Through a proxy that black-holes: the proxy's own connection to the server stays healthy, so
    // the server alone would keep the session, and the lock, as long as the proxy lives.
    const proxy = await FaultProxy.start(databaseUrl());
    const admin = makePool({ max: 1 });
    try {
      const key = uniqueKey();
      const lock = await newLock(makePool({ connectionString: proxy.url(databaseUrl()) }), key, {
        keepaliveMs: 200,
        probeTimeoutMs: 300,
      });
      expect(await lock.lock()).toBe(true);
      const cut = performance.now();
      proxy.blackhole();
      await eventually(() => lock.signal.aborted, 10_000);
      const told = performance.now() - cut;
      await eventually(async () => (await locksOnKey(admin, key)).length === 0, 10_000);
      const freed = performance.now() - cut;
      expect(told).toBeLessThan(200 + 300 + 1_000);
      expect(freed - told).toBeLessThan(2_000);
      await lock.close();
    } finally {
      await proxy.stop();
    }
  });

  describe("a statement stuck on the server (a fencing token waiting for a synchronous standby that does not exist)", () => {
    let server: ThrowawayPostgres;
    beforeAll(async () => {
      server = await startThrowawayPostgres({ postgresFlags: ["-c", "synchronous_standby_names=nobody"] });
    });
    afterAll(() => server.stop());

    it("acquire gives up after probeTimeoutMs, and the lock is free within about a second", async () => {
      const admin = new pg.Client({ connectionString: server.url });
      await admin.connect();
      const pool = new pg.Pool({ connectionString: server.url, max: 6 });
      pool.on("error", () => {});
      // The fencing table must exist first: its CREATE would wait for the standby too.
      await admin.query(
        "SET synchronous_commit = local; CREATE TABLE pglock_fencing (lock_key text PRIMARY KEY, token bigint NOT NULL)",
      );
      const locker = createLocker(pool, { keepaliveMs: 200, probeTimeoutMs: 1_000 });
      const other = createLocker(pool);
      try {
        const key = uniqueKey();
        const error = await locker.acquire(key, { fencing: true }).catch((e: unknown) => e);
        const abandoned = performance.now();
        expect(error).toBeInstanceOf(ConnectionError);
        // The server process was in its SyncRep wait, holding the advisory lock; it was ended.
        const next = await eventually(async () => (await other.tryAcquire(key)) !== null, 10_000).then(
          () => performance.now() - abandoned,
        );
        expect(next).toBeLessThan(2_000);
        const { rows } = await admin.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
        );
        expect(rows[0].n).toBe(0);
      } finally {
        await other.close();
        await locker.close();
        await pool.end();
        await admin.end();
      }
    });
  });
});
