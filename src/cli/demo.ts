/** `pglock demo`: workers, a leader election and a semaphore at work, in a few seconds of output. */
import { createLocker, type Locker } from "../advisory/locker.js";
import { sleep } from "../signals.js";
import { parseFlags, UsageError } from "./args.js";
import { makePool } from "./connect.js";

export async function demo(args: string[], io: { out(line: string): void }): Promise<number> {
  const { values, positionals } = parseFlags(args, { database: { type: "string" } });
  if (positionals.length > 0) throw new UsageError(`demo takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const database = values.database ?? process.env.DATABASE_URL;
  if (!database && !process.env.PGHOST && !process.env.PGDATABASE) {
    // The package ships no server: from a clone, `npm run demo` starts a throwaway one (issue #24).
    throw new UsageError("demo needs a database: pass --database URL, or set DATABASE_URL (or PGHOST)");
  }
  const pool = makePool(database, 12);
  const start = performance.now();
  const say = (line: string) => io.out(`+${String(Math.round(performance.now() - start)).padStart(5)} ms  ${line}`);
  const lockers: Locker[] = Array.from({ length: 3 }, (_, i) =>
    createLocker(pool, { applicationName: `pglock-demo-${i + 1}` }),
  );
  try {
    io.out("\n1. Four workers on three instances, one lock: the critical sections take turns.");
    await Promise.all(
      [1, 2, 3, 4].map((worker) =>
        (lockers[worker % 3] as Locker).withLock("demo:report", async () => {
          say(`worker ${worker} holds "demo:report"`);
          await sleep(150);
          say(`worker ${worker} releases`);
        }),
      ),
    );

    io.out("\n2. Leader election: three instances campaign; each leader serves a short term, then steps down.");
    await Promise.all(
      lockers.map(async (locker, i) => {
        const election = locker.leaderElection("demo:scheduler");
        election.on("elected", () => say(`instance ${i + 1} is the leader`));
        await election.run(async () => {
          await sleep(200);
          say(`instance ${i + 1} steps down`);
        });
      }),
    );

    io.out("\n3. A semaphore of 2 permits: five jobs, never more than two at a time.");
    let running = 0;
    await Promise.all(
      [1, 2, 3, 4, 5].map(async (job) => {
        const semaphore = (lockers[job % 3] as Locker).semaphore("demo:exports", 2);
        await using slot = await semaphore.acquire({ timeout: 10_000 });
        running++;
        say(`job ${job} runs in slot ${slot.slot} (${running} running)`);
        await sleep(150);
        running--;
      }),
    );
    io.out("\nDone. Try `pglock ls` in another terminal while something holds a lock.");
    return 0;
  } finally {
    await Promise.all(lockers.map((locker) => locker.close()));
    await pool.end();
  }
}
