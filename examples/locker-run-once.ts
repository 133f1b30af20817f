// Run once: every instance's cron fires the job; tryWithLock runs it on one of them.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const instances = [createLocker(pool), createLocker(pool), createLocker(pool)];
let turnedAway = 0;

const results = await Promise.all(
  instances.map(async (locker, i) => {
    const result = await locker.tryWithLock("nightly-cleanup", async () => {
      // A lock excludes only runs that overlap: the job outlasts the other instances' tries (a real
      // clean-up takes minutes; this one lasts until they have been turned away, at most 10 s).
      for (let waited = 0; turnedAway < instances.length - 1 && waited < 10_000; waited += 20) await sleep(20);
      return `instance ${i + 1} cleaned up`;
    });
    if (!result.acquired) turnedAway++;
    return result;
  }),
);
for (const result of results) console.log(result.acquired ? result.value : "skipped: another instance runs it");
if (results.filter((r) => r.acquired).length !== 1) throw new Error("the job must run exactly once");
await Promise.all(instances.map((locker) => locker.close()));
await pool.end();
