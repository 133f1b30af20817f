import { hashKey, InvalidArgumentError, InvalidLockKeyError, lockKey, newLock, PglockError } from "pglock";
import { describe, expect, it } from "vitest";
import { locksOnKey, makePool } from "./support/db.js";

describe("hashKey", () => {
  it("is FNV-1a 64 read as a signed int64, as go-pglock's hashToInt64", () => {
    expect(hashKey("cleanup-task")).toBe(-7671976228194938313n);
    // FNV-1a 64 test vectors (offset basis for "", and "a"), read as signed
    expect(hashKey("")).toBe(BigInt.asIntN(64, 0xcbf29ce484222325n));
    expect(hashKey("a")).toBe(BigInt.asIntN(64, 0xaf63dc4c8601ec8cn));
  });

  it("hashes UTF-8 bytes, not UTF-16 code units", () => {
    expect(hashKey("é")).not.toBe(hashKey("\u00e9".normalize("NFD")));
    expect(hashKey("日本")).toBe(hashKey("日本"));
  });
});

describe("lockKey", () => {
  it("accepts int64 bigints, safe integers, names and int32 pairs", () => {
    expect(lockKey(-(2n ** 63n)).id).toBe(-(2n ** 63n));
    expect(lockKey(2n ** 63n - 1n).id).toBe(2n ** 63n - 1n);
    expect(lockKey(42).id).toBe(42n);
    expect(lockKey(Number.MAX_SAFE_INTEGER).id).toBe(9007199254740991n);
    expect(lockKey("cleanup-task").id).toBe(-7671976228194938313n);
    expect(lockKey("cleanup-task").name).toBe("cleanup-task");
    expect(lockKey([-(2 ** 31), 2 ** 31 - 1]).pair).toEqual([-(2 ** 31), 2 ** 31 - 1]);
    expect(lockKey(0).identity).not.toBe(lockKey([0, 0]).identity);
  });

  const bad: [string, unknown, RegExp][] = [
    ["NaN", Number.NaN, /NaN is not a safe integer/],
    ["Infinity", Number.POSITIVE_INFINITY, /Infinity is not a safe integer/],
    ["1.5", 1.5, /1\.5 is not a safe integer/],
    ["2^53", 2 ** 53, /9007199254740992 is not a safe integer/],
    ["bigint above int64", 2n ** 63n, /9223372036854775808n is outside int64/],
    ["bigint below int64", -(2n ** 63n) - 1n, /outside int64/],
    ["pair member above int32", [0, 2 ** 31], /member 2147483648: .*int32/],
    ["pair member not an integer", [1.5, 0], /member 1\.5: .*int32/],
    ["pair member a string", ["1", 0], /member "1"/],
    ["pair of 3", [1, 2, 3], /has 3 members: a pair has exactly 2/],
    ["empty pair", [], /has 0 members/],
    ["null", null, /lock key null is not a key/],
    ["undefined", undefined, /lock key undefined is not a key/],
    ["object", { id: 1 }, /lock key an object is not a key/],
    ["boolean", true, /lock key true is not a key/],
  ];
  for (const [label, value, message] of bad) {
    it(`rejects ${label} with InvalidLockKeyError naming the value and the rule`, () => {
      let thrown: unknown;
      try {
        lockKey(value as never);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(InvalidLockKeyError);
      expect(thrown).toBeInstanceOf(InvalidArgumentError);
      expect(thrown).toBeInstanceOf(TypeError);
      expect(thrown).toBeInstanceOf(PglockError);
      expect((thrown as InvalidLockKeyError).code).toBe("ERR_PGLOCK_INVALID_KEY");
      expect((thrown as Error).message).toMatch(message);
    });
  }

  it("rejects a bad key in newLock before touching the database", async () => {
    // A pool pointing nowhere: had newLock connected first, the error would be a connection error.
    const pool = makePool({ connectionString: "postgres://nobody@127.0.0.1:1/none" });
    await expect(newLock(pool, 1.5)).rejects.toBeInstanceOf(InvalidLockKeyError);
    expect(pool.totalCount).toBe(0);
  });
});

describe("key spaces on the server", () => {
  it("0 and [0, 0] are different locks; a name is its hash", async () => {
    const pool = makePool();
    const a = await newLock(pool, 0);
    const b = await newLock(pool, [0, 0]);
    const name = `key-test-${Math.random()}`;
    const c = await newLock(pool, name);
    const d = await newLock(pool, hashKey(name));
    try {
      expect(await a.lock()).toBe(true);
      expect(await b.lock()).toBe(true);
      expect(await c.lock()).toBe(true);
      expect(await d.lock()).toBe(false); // same int64 as the name
      expect(await locksOnKey(pool, hashKey(name))).toHaveLength(1);
    } finally {
      await Promise.all([a.close(), b.close(), c.close(), d.close()]);
    }
  });
});
