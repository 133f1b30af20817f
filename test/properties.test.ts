// Property tests over bad input: every key, option set and command line either works or fails with
// pglock's typed error; none hangs, throws something untyped, or leaves a connection behind.
import fc from "fast-check";
import { createLocker, InvalidArgumentError, InvalidLockKeyError, lockKey, PglockError } from "pglock";
import { describe, expect, it } from "vitest";
import { main } from "../src/cli/main.js";
import { eventually, makePool, sessionsNamed, uniqueName } from "./support/db.js";

const anything = fc.oneof(
  fc.anything(),
  fc.bigInt(),
  fc.double(),
  fc.integer(),
  fc.array(fc.oneof(fc.integer(), fc.double(), fc.string(), fc.bigInt()), { maxLength: 3 }),
);

describe("properties", () => {
  it("lockKey: any value is a key or an InvalidLockKeyError, and a key is stable", () => {
    fc.assert(
      fc.property(anything, (value) => {
        let key: ReturnType<typeof lockKey>;
        try {
          key = lockKey(value as never);
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidLockKeyError);
          expect((error as Error).message.length).toBeGreaterThan(10);
          return;
        }
        expect(lockKey(key).identity).toBe(key.identity);
        if (key.id !== undefined) expect(key.id >= -(2n ** 63n) && key.id < 2n ** 63n).toBe(true);
      }),
      { numRuns: 2_000 },
    );
  });

  it("Locker.acquire: any options either work or are typed errors; nothing hangs or leaks", async () => {
    const app = uniqueName();
    const admin = makePool({ max: 1 });
    const locker = createLocker(makePool({ max: 4 }), { applicationName: app });
    const options = fc.record(
      {
        shared: fc.oneof(fc.boolean(), anything),
        timeout: fc.oneof(fc.integer({ min: 0, max: 50 }), anything),
        signal: anything,
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.integer(), fc.string(), anything), options, async (key, opts) => {
        try {
          const handle = await locker.acquire(key as never, opts as never);
          await handle.release();
        } catch (error) {
          expect(error).toBeInstanceOf(PglockError);
          expect(error instanceof InvalidArgumentError || (error as PglockError).code === "ERR_PGLOCK_TIMEOUT").toBe(
            true,
          );
        }
      }),
      { numRuns: 300, interruptAfterTimeLimit: 40_000 },
    );
    expect(locker.stats()).toMatchObject({ held: 0, waiting: 0 });
    await locker.close();
    // An ended backend leaves pg_stat_activity a moment after its socket closes.
    await eventually(async () => (await sessionsNamed(admin, app)).length === 0);
  });

  it("the pglock command: any arguments give an exit code and one clear message, never a crash or a hang", async () => {
    // No `--` token is generated, so `run` can never reach a command; the database is unreachable.
    const token = fc.oneof(
      fc.constantFrom("run", "ls", "key", "demo", "--help", "--version", "--json", "--id", "--pair", "--shared"),
      fc.constantFrom("--timeout", "--no-wait", "--wait", "--busy-exit-code", "--key", "--database", "-x"),
      fc.string({ maxLength: 12 }).filter((s) => s !== "--"),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(token, { maxLength: 6 }), async (args) => {
        const lines: string[] = [];
        const io = { out: (line: string) => lines.push(line), error: (line: string) => lines.push(line) };
        const previous = process.env.DATABASE_URL;
        process.env.DATABASE_URL = "postgres://nobody:secret@127.0.0.1:1/none";
        try {
          const code = await main(args.includes("demo") ? args.filter((a) => a !== "demo") : args, io);
          expect([0, 2, 69]).toContain(code);
          expect(lines.join("\n")).not.toContain("secret");
        } finally {
          process.env.DATABASE_URL = previous;
        }
      }),
      { numRuns: 200, interruptAfterTimeLimit: 40_000 },
    );
  });
});
