// Scheduled job coordination: every instance's cron fires; the job runs on one of them per tick.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const INSTANCES = ["instance-1", "instance-2", "instance-3"];
let runs = 0;
let skippedThisTick = 0;

async function execute(instance: string, jobId: string) {
  await using lock = await newLock(pool, jobId);
  if (!(await lock.lock())) {
    console.log(`${instance}: job ${jobId} is already running on another instance`);
    skippedThisTick++;
    return;
  }
  try {
    console.log(`${instance}: executing job ${jobId}...`);
    runs++;
    // The job outlasts the other instances' fires of this tick (a lock excludes only runs that
    // overlap): here it lasts until they have been turned away, at most 10 s.
    for (let waited = 0; skippedThisTick < INSTANCES.length - 1 && waited < 10_000; waited += 20) await sleep(20);
  } finally {
    await lock.unlock();
  }
}

for (let tick = 0; tick < 2; tick++) {
  skippedThisTick = 0;
  await Promise.all(INSTANCES.map((name) => execute(name, "cleanup-task")));
}
await pool.end();
if (runs !== 2) throw new Error(`expected one run per tick, got ${runs} runs in 2 ticks`);
