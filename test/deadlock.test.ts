// Deadlocks between Lockers and seed Locks (issue #16): PostgreSQL cannot see them, pglock can.
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createLocker, DeadlockError, type Locker, newLock } from "pglock";
import { afterAll, describe, expect, it } from "vitest";
import { databaseUrl, makePool, uniqueName } from "./support/db.js";
import { program } from "./support/run.js";

/** A party in its own process: what it printed, line by line. */
function party(kind: "locker" | "lock", first: string, second: string) {
  const [command, args] = program("test/support/deadlock-child.ts");
  const child: ChildProcessWithoutNullStreams = spawn(command, [...args, kind, first, second], {
    env: { ...process.env, DATABASE_URL: databaseUrl() },
  });
  const lines: string[] = [];
  let stderr = "";
  const waiters: (() => void)[] = [];
  let buffered = "";
  child.stdout.on("data", (chunk) => {
    buffered += chunk;
    const parts = buffered.split("\n");
    buffered = parts.pop() as string;
    lines.push(...parts);
    for (const wake of waiters.splice(0)) wake();
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const line = (matching: RegExp, timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${matching} within ${timeoutMs} ms: ${lines} ${stderr}`)),
        timeoutMs,
      );
      const check = () => {
        const found = lines.find((text) => matching.test(text));
        if (found !== undefined) {
          clearTimeout(timer);
          resolve(found);
        } else waiters.push(check);
      };
      check();
    });
  return { child, line, exited, go: () => child.stdin.write("go\n") };
}

/** Runs a cycle of parties: each holds its key and then waits for the next party's key. */
async function cycle(kinds: ("locker" | "lock")[]) {
  const keys = kinds.map(() => uniqueName("deadlock"));
  const parties = kinds.map((kind, i) => party(kind, keys[i] as string, keys[(i + 1) % keys.length] as string));
  await Promise.all(parties.map((p) => p.line(/^holding$/, 30_000)));
  for (const p of parties) p.go();
  // A generous bound: the check first looks after 1 s (deadlockTimeoutMs's default).
  const outcomes = await Promise.all(parties.map((p) => p.line(/^(granted|failed) /, 20_000)));
  const codes = await Promise.all(parties.map((p) => p.exited));
  const victimMs = outcomes.filter((o) => o.startsWith("failed")).map((o) => Number(o.split(" ").at(-1)));
  if (process.env.DEADLOCK_TIMES) process.stderr.write(`victim failed after ${victimMs} ms\n`);
  // Never before the wait has lasted deadlockTimeoutMs: the check is not eager.
  for (const ms of victimMs) expect(ms).toBeGreaterThanOrEqual(1_000);
  return { outcomes, codes };
}

describe("a deadlock between Lockers in different processes", () => {
  it("two Lockers: exactly one rejects with DeadlockError, the other is granted", async () => {
    const { outcomes, codes } = await cycle(["locker", "locker"]);
    expect(outcomes.filter((o) => o.startsWith("failed ERR_PGLOCK_DEADLOCK "))).toHaveLength(1);
    expect(outcomes.filter((o) => o.startsWith("granted "))).toHaveLength(1);
    expect(codes).toEqual([0, 0]);
  });

  it("three Lockers in a cycle: exactly one gives way, the other two are granted", async () => {
    const { outcomes, codes } = await cycle(["locker", "locker", "locker"]);
    expect(outcomes.filter((o) => o.startsWith("failed ERR_PGLOCK_DEADLOCK "))).toHaveLength(1);
    expect(outcomes.filter((o) => o.startsWith("granted "))).toHaveLength(2);
    expect(codes).toEqual([0, 0, 0]);
  });

  it("a Locker against seed Locks: exactly one side gives way", async () => {
    const { outcomes, codes } = await cycle(["locker", "lock"]);
    expect(outcomes.filter((o) => o.startsWith("failed ERR_PGLOCK_DEADLOCK "))).toHaveLength(1);
    expect(outcomes.filter((o) => o.startsWith("granted "))).toHaveLength(1);
    expect(codes).toEqual([0, 0]);
  });
});

describe("no deadlock, no DeadlockError", () => {
  it("seed Locks of one process queued on one key wait for one another: a queue, not a cycle", async () => {
    const pool = makePool({ max: 8 });
    const key = uniqueName("queue");
    const locks = await Promise.all(Array.from({ length: 4 }, () => newLock(pool, key, { deadlockTimeoutMs: 20 })));
    const order: number[] = [];
    await Promise.all(
      locks.map(async (lock, i) => {
        await lock.waitAndLock();
        order.push(i);
        await new Promise((resolve) => setTimeout(resolve, 100)); // long enough for several looks
        await lock.unlock();
      }),
    );
    expect(order.sort()).toEqual([0, 1, 2, 3]);
    await Promise.all(locks.map((lock) => lock.close()));
  });

  const lockers: Locker[] = [];
  afterAll(async () => {
    await Promise.all(lockers.map((l) => l.close()));
  });

  it("1,000 contended acquires by 8 Lockers, half of them nested in one global order: none fails", async () => {
    // Keys are always taken in one order, so no cycle exists. Each Locker serves one caller at a
    // time, so a Locker's holds are its waiting caller's holds (see the README on what the check
    // assumes). The check looks after 10 ms instead of 1 s, so that it runs on most waits here.
    for (let i = 0; i < 8; i++) lockers.push(createLocker(makePool({ max: 4 }), { deadlockTimeoutMs: 10 }));
    const keys = Array.from({ length: 6 }, () => uniqueName("no-deadlock"));
    const hold = () => new Promise((resolve) => setTimeout(resolve, Math.random() * 5));
    const failures: unknown[] = [];
    let done = 0;
    const caller = async (locker: Locker) => {
      for (let i = 0; i < 125; i++) {
        const a = Math.floor(Math.random() * keys.length);
        const b = Math.floor(Math.random() * keys.length);
        const [outer, inner] = [Math.min(a, b), Math.max(a, b)];
        try {
          await locker.withLock(keys[outer] as string, async () => {
            await hold();
            if (inner !== outer && Math.random() < 0.5) await locker.withLock(keys[inner] as string, hold);
          });
          done++;
        } catch (error) {
          failures.push(error);
        }
      }
    };
    await Promise.all(lockers.map(caller));
    expect(failures.filter((error) => error instanceof DeadlockError)).toEqual([]);
    expect(failures).toEqual([]);
    expect(done).toBe(1_000);
  });
});
