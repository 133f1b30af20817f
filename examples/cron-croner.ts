// Recipe: croner on every replica, the job once per tick. Each replica schedules the same job; the
// callback runs it under tryWithLock with atLeastMs (shorter than the interval, longer than the
// replicas' spread). Three replicas share this process here, their clocks 0, 100 and 200 ms apart.
import { setTimeout as sleep } from "node:timers/promises";
import { Cron } from "croner";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const job = `croner-report-${process.pid}`;
const runs: number[] = [];

const replicas = [0, 100, 200].map((skewMs, replica) => {
  const locker = createLocker(pool);
  const cron = new Cron("* * * * * *", async () => {
    const tick = Math.round(Date.now() / 1000); // the second this call is for, even when it runs late
    await sleep(skewMs);
    await locker.tryWithLock(
      job,
      async () => {
        runs.push(tick);
        console.log(`replica ${replica + 1} ran the job`);
      },
      { atLeastMs: 500, atMostMs: 900 },
    );
  });
  return { locker, cron };
});

await sleep(3_500);
for (const { cron } of replicas) cron.stop();
await sleep(400); // the last tick's callbacks
await Promise.all(replicas.map(({ locker }) => locker.close()));
await pool.end();
if (runs.length < 3 || new Set(runs).size !== runs.length) throw new Error(`one run per second expected: ${runs}`);
