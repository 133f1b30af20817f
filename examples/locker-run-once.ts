// Run once: every instance's cron fires the job; tryWithLock runs it on one of them.
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const instances = [createLocker(pool), createLocker(pool), createLocker(pool)];

const results = await Promise.all(
  instances.map((locker, i) =>
    locker.tryWithLock("nightly-cleanup", async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return `instance ${i + 1} cleaned up`;
    }),
  ),
);
for (const result of results) console.log(result.acquired ? result.value : "skipped: another instance runs it");
if (results.filter((r) => r.acquired).length !== 1) throw new Error("the job must run exactly once");
await Promise.all(instances.map((locker) => locker.close()));
await pool.end();
