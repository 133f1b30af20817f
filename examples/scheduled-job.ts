// Scheduled job coordination: every instance's cron fires; the job runs on one of them per tick.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
let runs = 0;

async function execute(instance: string, jobId: string) {
  await using lock = await newLock(pool, jobId);
  if (!(await lock.lock())) {
    console.log(`${instance}: job ${jobId} is already running on another instance`);
    return;
  }
  try {
    console.log(`${instance}: executing job ${jobId}...`);
    runs++;
    await new Promise((resolve) => setTimeout(resolve, 100));
  } finally {
    await lock.unlock();
  }
}

for (let tick = 0; tick < 2; tick++) {
  await Promise.all(["instance-1", "instance-2", "instance-3"].map((name) => execute(name, "cleanup-task")));
}
await pool.end();
if (runs !== 2) throw new Error(`expected one run per tick, got ${runs} runs in 2 ticks`);
