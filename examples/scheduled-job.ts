// Scheduled job coordination: every instance's cron fires; the job runs on one of them per tick.
// Instances never fire at the same instant (their clocks, event loops and start times differ), and a
// job is often shorter than that spread: `atLeastMs` keeps the key taken for the rest of the tick,
// by the server's clock, after the job is done and even after its process exits.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const instances = ["instance-1", "instance-2", "instance-3"].map((name) => ({ name, locker: createLocker(pool) }));
const job = `cleanup-task-${process.pid}`;
let runs = 0;

async function onTick(instance: (typeof instances)[number]) {
  const result = await instance.locker.tryWithLock(
    job,
    async () => {
      console.log(`${instance.name}: executing job ${job}...`);
      runs++;
      await sleep(20); // far shorter than the 300 ms between the first and the last instance's fire
    },
    { atLeastMs: 1_000 }, // less than the tick (2 s), more than the instances' spread
  );
  if (!result.acquired) console.log(`${instance.name}: job ${job} already ran this tick`);
}

for (let tick = 0; tick < 2; tick++) {
  const fired = performance.now();
  // The instances fire 0, 150 and 300 ms apart.
  await Promise.all(instances.map((instance, i) => sleep(150 * i).then(() => onTick(instance))));
  await sleep(2_000 - (performance.now() - fired)); // the next tick
}
await Promise.all(instances.map(({ locker }) => locker.close()));
await pool.end();
if (runs !== 2) throw new Error(`expected one run per tick, got ${runs} runs in 2 ticks`);
