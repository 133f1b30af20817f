// Bun's built-in SQL as a driver, beyond the Lock and contract suites (which run on it too): a
// transaction's lock, inspectLocks, NOTIFY wake-ups. Collected only when the suite runs on Bun.
import { createLocker, inspectLocks, LockTimeoutError, withXactLock } from "pglock";
import { describe, expect, it } from "vitest";
import { locksOnKey, makeBunSql, makePool, sleep, uniqueKey } from "../support/db.js";

interface BunTransaction {
  (...args: never[]): unknown;
  unsafe(text: string, values?: unknown[]): Promise<Record<string, unknown>[]>;
  savepoint<T>(fn: (tx: BunTransaction) => Promise<T>): Promise<T>;
}
interface BunSqlInstance {
  begin<T>(fn: (tx: BunTransaction) => Promise<T>): Promise<T>;
  unsafe(text: string, values?: unknown[]): Promise<Record<string, unknown>[]>;
}

describe("Bun SQL", () => {
  const admin = makePool({ max: 2 });

  it("withXactLock in sql.begin holds the lock until commit; a timeout leaves the transaction usable", async () => {
    const sql = makeBunSql() as BunSqlInstance;
    const key = uniqueKey();
    let during: unknown[] = [];
    const result = await sql.begin(async (tx) => {
      await withXactLock(tx, key, async () => {
        during = await locksOnKey(admin, key);
      });
      // A second transaction cannot take it while this one is open.
      const other = makeBunSql() as BunSqlInstance;
      const refused = await other
        .begin((tx2) => withXactLock(tx2, key, () => "taken", { timeout: 100 }))
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(LockTimeoutError);
      const [row] = await tx.unsafe("SELECT 1 AS one");
      return row?.one;
    });
    expect(result).toBe(1);
    expect(during).toHaveLength(1);
    expect(await locksOnKey(admin, key)).toEqual([]);
    // @ts-expect-error the instance is not a transaction: TypeScript refuses it, and so does pglock
    await expect(withXactLock(sql, key, () => 1)).rejects.toThrow(/pass the transaction's sql/);
  });

  it("inspectLocks lists a lock held through a Bun SQL Locker", async () => {
    const sql = makeBunSql();
    const locker = createLocker(sql);
    const key = uniqueKey();
    const held = await locker.acquire(key);
    const locks = await inspectLocks(sql, { key });
    expect(locks.map((lock) => [lock.key.id, lock.granted])).toEqual([[key, true]]);
    await held.release();
    await locker.close();
  });

  it("a semaphore waiter is woken by the release's NOTIFY, not only by the fallback poll", async () => {
    const holder = createLocker(makeBunSql());
    const waiter = createLocker(makeBunSql());
    const name = `bun-sem-${uniqueKey()}`;
    const slot = await holder.semaphore(name, 1).acquire();
    const waiting = waiter.semaphore(name, 1).acquire({ timeout: 20_000 });
    await sleep(700); // past one fallback poll, so only a NOTIFY can explain a quick wake-up
    const released = performance.now();
    await slot.release();
    const next = await waiting;
    expect(performance.now() - released).toBeLessThan(400);
    await next.release();
    await holder.close();
    await waiter.close();
  });
});
