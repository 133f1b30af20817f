// One replica of a service with a scheduled job (issue #25): croner fires every 2 s, and this
// replica's clock is OFFSET_MS late, as replicas' clocks, event loops and start times differ. Each
// tick runs JOB_MS of work under tryWithLock(KEY, …, { atLeastMs, atMostMs }) if the key is free.
// Runs only on ticks in [FROM, UNTIL) (wall clock, ms), then says each run as a JSON line
// {"start","end"} and exits.
import { Cron } from "croner";
import pg from "pg";
import { createLocker } from "pglock";
import { say } from "./child-io.js";

const env = (name: string) => Number(process.env[name]);
const [key, offsetMs, jobMs, from, until] = [
  process.env.KEY as string,
  env("OFFSET_MS"),
  env("JOB_MS"),
  env("FROM"),
  env("UNTIL"),
];
const runLength = { atLeastMs: env("AT_LEAST_MS"), ...(process.env.AT_MOST_MS ? { atMostMs: env("AT_MOST_MS") } : {}) };
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on("error", () => {});
const locker = createLocker(pool);
const runs: { start: number; end: number }[] = [];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const job = new Cron("*/2 * * * * *", async () => {
  const tick = Date.now();
  if (tick < from - 500 || tick >= until - 500) return;
  await sleep(offsetMs);
  await locker.tryWithLock(
    key,
    async () => {
      const start = Date.now();
      await sleep(jobMs);
      runs.push({ start, end: Date.now() });
    },
    runLength,
  );
});
say("ready");
await sleep(until - Date.now() + 4_000);
job.stop();
for (const run of runs) say(JSON.stringify(run));
await locker.close();
await pool.end();
