// Deadlocks between tasks (issues #16, #23): PostgreSQL cannot see a cycle through a Locker, pglock
// can, and it reports one only when every task in it is known to hold what the next one waits for.
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { userInfo } from "node:os";
import pg from "pg";
import { createLocker, DeadlockError, type Locker, newLock } from "pglock";
import { afterAll, describe, expect, it } from "vitest";
import { databaseUrl, makePool, sleep, uniqueKey, uniqueName } from "./support/db.js";
import { program } from "./support/run.js";

interface PartyOptions {
  env?: NodeJS.ProcessEnv;
  /** Run as pid 1 of a PID namespace of its own, with this host name (a container, as Kubernetes runs it). */
  pod?: string;
}

/** A program in its own process, fed "go" on stdin: what it printed, line by line. */
function party(file: string, args: string[], options: PartyOptions = {}) {
  const [command, commandArgs] = program(file);
  const env = { ...process.env, DATABASE_URL: databaseUrl(), ...options.env };
  const child: ChildProcessWithoutNullStreams = options.pod
    ? spawn(
        "unshare",
        [
          "--pid",
          "--fork",
          "--uts",
          "--mount-proc",
          "sh",
          "-c",
          'hostname "$0" && exec "$@"',
          options.pod,
          command,
          ...commandArgs,
          ...args,
        ],
        { env },
      )
    : spawn(command, [...commandArgs, ...args], { env });
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

type Kind = "locker" | "handles" | "handles-unsaid" | "lock" | "lock-unsaid";

/** Runs a cycle of tasks in processes: each holds its key and then waits for the next one's key. */
async function cycle(kinds: Kind[], options: { env?: NodeJS.ProcessEnv; pods?: string[] } = {}) {
  const keys = kinds.map(() => uniqueName("deadlock"));
  const parties = kinds.map((kind, i) =>
    party("test/support/deadlock-child.ts", [kind, keys[i] as string, keys[(i + 1) % keys.length] as string], {
      env: options.env,
      pod: options.pods?.[i],
    }),
  );
  const identities = options.pods ? await Promise.all(parties.map((p) => p.line(/^identity /, 30_000))) : [];
  await Promise.all(parties.map((p) => p.line(/^holding$/, 30_000)));
  for (const p of parties) p.go();
  // A generous bound: the check first looks after 1 s (deadlockTimeoutMs's default).
  const outcomes = await Promise.all(parties.map((p) => p.line(/^(granted|failed) /, 20_000)));
  const codes = await Promise.all(parties.map((p) => p.exited));
  const victimMs = outcomes
    .filter((o) => o.startsWith("failed ERR_PGLOCK_DEADLOCK"))
    .map((o) => Number(o.split(" ").at(-1)));
  if (process.env.DEADLOCK_TIMES) process.stderr.write(`victim failed after ${victimMs} ms\n`);
  // Never before the wait has lasted deadlockTimeoutMs: the check is not eager. And within twice that,
  // plus room for a loaded machine to start the wait and read pg_locks twice.
  for (const ms of victimMs) {
    expect(ms).toBeGreaterThanOrEqual(1_000);
    expect(ms).toBeLessThan(2 * 1_000 + 1_500);
  }
  return { outcomes, codes, identities };
}

const deadlocks = (outcomes: string[]) => outcomes.filter((o) => o.startsWith("failed ERR_PGLOCK_DEADLOCK "));
const granted = (outcomes: string[]) => outcomes.filter((o) => o.startsWith("granted "));

describe("a deadlock between tasks in different processes fails exactly one of them", () => {
  it("nested withLock calls in two processes", async () => {
    const { outcomes, codes } = await cycle(["locker", "locker"]);
    expect(deadlocks(outcomes)).toHaveLength(1);
    expect(granted(outcomes)).toHaveLength(1);
    expect(codes).toEqual([0, 0]);
  });

  it("nested withLock calls in three processes in a ring", async () => {
    const { outcomes, codes } = await cycle(["locker", "locker", "locker"]);
    expect(deadlocks(outcomes)).toHaveLength(1);
    expect(granted(outcomes)).toHaveLength(2);
    expect(codes).toEqual([0, 0, 0]);
  });

  it("handles with { holding }, and a seed Lock with { holding }, against nested withLock", async () => {
    const { outcomes, codes } = await cycle(["handles", "lock", "locker"]);
    expect(deadlocks(outcomes)).toHaveLength(1);
    expect(granted(outcomes)).toHaveLength(2);
    expect(codes).toEqual([0, 0, 0]);
  });

  it.runIf(process.platform === "linux" && userInfo().uid === 0)(
    "two pid-1 processes on host names alike in their first 24 characters (needs root for unshare)",
    async () => {
      const pods = ["billing-worker-deployment-7d9f8b6c4-abcde", "billing-worker-deployment-7d9f8b6c4-fghij"];
      const { outcomes, codes, identities } = await cycle(["locker", "locker"], { pods, env: { PRINT_IDENTITY: "1" } });
      expect(identities).toEqual(pods.map((pod) => `identity 1 ${pod}`));
      expect(deadlocks(outcomes)).toHaveLength(1);
      expect(granted(outcomes)).toHaveLength(1);
      expect(codes).toEqual([0, 0]);
    },
  );
});

describe("what pglock is not told, it does not report", () => {
  it("handle-style waits without { holding }: both wait until their own timeouts, no DeadlockError", async () => {
    const { outcomes } = await cycle(["handles-unsaid", "handles-unsaid"], { env: { WAIT_TIMEOUT_MS: "3000" } });
    // One side may be granted once the other's timeout made it let go.
    expect(deadlocks(outcomes)).toEqual([]);
    expect(outcomes.filter((o) => o.startsWith("failed ERR_PGLOCK_TIMEOUT ")).length).toBeGreaterThanOrEqual(1);
  });

  it("seed Locks without { holding } (as go-pglock): no DeadlockError", async () => {
    const { outcomes } = await cycle(["lock-unsaid", "lock-unsaid"], { env: { WAIT_TIMEOUT_MS: "3000" } });
    expect(deadlocks(outcomes)).toEqual([]);
    expect(granted(outcomes).length).toBeLessThanOrEqual(1);
  });
});

describe("independent tasks never get a DeadlockError (default options)", () => {
  /** Each process: task 1 holds its key for 3 s; task 2, 0.5 s later, waits for the next process's key. */
  async function ring(kinds: ("locker" | "lock")[]) {
    const keys = kinds.map(() => uniqueName("independent"));
    const parties = kinds.map((kind, i) =>
      party("test/support/independent-child.ts", [kind, keys[i] as string, keys[(i + 1) % keys.length] as string]),
    );
    await Promise.all(parties.map((p) => p.line(/^ready$/, 30_000)));
    for (const p of parties) p.go();
    const outcomes = await Promise.all(parties.map((p) => p.line(/^(granted|failed) /, 30_000)));
    expect(await Promise.all(parties.map((p) => p.exited))).toEqual(kinds.map(() => 0));
    return outcomes;
  }

  it("two processes with Lockers: both waits are granted", async () => {
    expect(granted(await ring(["locker", "locker"]))).toHaveLength(2);
  });

  it("three processes in a ring, Lockers and seed Locks: every wait is granted", async () => {
    expect(granted(await ring(["locker", "lock", "locker"]))).toHaveLength(3);
  });

  it("two processes with seed Locks: both waits are granted", async () => {
    expect(granted(await ring(["lock", "lock"]))).toHaveLength(2);
  });

  it("randomized: 5 processes, tasks that take keys alone or nested in one order, >= 2,000 long waits, none fails", async () => {
    const keys = Array.from({ length: 3 }, () => uniqueName("random")).join(",");
    const kinds = ["locker", "locker", "locker", "lock", "lock"];
    const seed = Number(process.env.SEED ?? Date.now() % 100_000);
    const parties = kinds.map((kind, i) =>
      party("test/support/random-tasks-child.ts", [kind, keys], {
        env: { SEED: String(seed + i), TASKS: "8", ROUNDS: "100", DEADLOCK_MS: "10" },
      }),
    );
    const reports = await Promise.all(parties.map((p) => p.line(/^\{/, 85_000)));
    const total = { waits: 0, longWaits: 0, deadlocks: 0, errors: 0 };
    const messages: string[] = [];
    for (const report of reports) {
      const counts = JSON.parse(report) as typeof total & { messages: string[] };
      for (const name of Object.keys(total) as (keyof typeof total)[]) total[name] += counts[name];
      messages.push(...counts.messages);
    }
    expect({ seed, deadlocks: total.deadlocks, errors: total.errors, messages }).toEqual({
      seed,
      deadlocks: 0,
      errors: 0,
      messages: [],
    });
    if (process.env.DEADLOCK_TIMES) process.stderr.write(`randomized: ${JSON.stringify(total)}\n`);
    expect(total.longWaits).toBeGreaterThanOrEqual(2_000);
  }, 90_000);
});

describe("a deadlock with a session pglock did not open", () => {
  it("the Locker's wait is the victim, even when the plain session's pid is higher", async () => {
    const locker = createLocker(makePool({ max: 6 }), { deadlockTimeoutMs: 200, idleMs: 60_000 });
    // Open the Locker's sessions first, so that the plain session's backend pid is the higher one.
    await Promise.all([1, 2, 3].map(() => locker.withLock(uniqueKey(), () => sleep(50))));
    const [k1, k2] = [uniqueKey(), uniqueKey()];
    const plain = new pg.Client({ connectionString: databaseUrl() });
    await plain.connect();
    try {
      const plainPid = Number((await plain.query("SELECT pg_backend_pid() AS pid")).rows[0].pid);
      let plainWait: Promise<unknown> | undefined;
      const error = await locker
        .withLock(k1, async () => {
          await plain.query("SELECT pg_advisory_lock($1::int8)", [String(k2)]);
          const inner = locker.withLock(k2, () => "inner");
          await sleep(100);
          plainWait = plain.query("SELECT pg_advisory_lock($1::int8)", [String(k1)]);
          await inner;
        })
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(DeadlockError);
      const cycle = (error as DeadlockError).cycle as string;
      expect(cycle).toContain(`a session pglock did not open (pid ${plainPid}) waits for ${k1}`);
      const lockerPid = Number(/\(pid (\d+)\) waits for [-\d]+/.exec(cycle)?.[1]);
      expect(plainPid).toBeGreaterThan(lockerPid);
      // The Locker released k1 when its callback ended: the plain session's wait is granted.
      await plainWait;
      await plain.query("SELECT pg_advisory_unlock_all()");
    } finally {
      await plain.end();
      await locker.close();
    }
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
