// Run once across replicas: every replica's cron fires, at slightly different moments; tryWithLock
// with atLeastMs runs the job on the first of them, and the key stays taken for the rest of the
// tick (by the server's clock), so the later ones skip it even though the job is long done.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const replicas = [createLocker(pool), createLocker(pool), createLocker(pool)];
const job = `nightly-cleanup-${process.pid}`;

const results = await Promise.all(
  replicas.map(async (locker, i) => {
    await sleep(200 * i); // replica i's timer fires 200 ms after replica i-1's
    return locker.tryWithLock(job, async () => `replica ${i + 1} cleaned up`, { atLeastMs: 60_000 });
  }),
);
for (const result of results) console.log(result.acquired ? result.value : "skipped: it ran on another replica");
if (results.filter((r) => r.acquired).length !== 1) throw new Error("the job must run exactly once");
await Promise.all(replicas.map((locker) => locker.close()));
await pool.end();
