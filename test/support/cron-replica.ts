// One replica of a service with a scheduled job (issue #25): croner fires every 2 s, and this
// replica's clock is OFFSET_MS late, as replicas' clocks, event loops and start times differ. Each
// tick runs JOB_MS of work under tryWithLock(KEY, …, { atLeastMs, atMostMs }) if the key is free.
// Says "ready", reads the window "<from> <until>" (wall clock, ms) from stdin, runs only on ticks in
// it, then says each run as a JSON line {"tick","start","end"} and exits.
import { Cron } from "croner";
import pg from "pg";
import { createLocker } from "pglock";
import { goSignal, say } from "./child-io.js";

const env = (name: string) => Number(process.env[name]);
const [key, offsetMs, jobMs] = [process.env.KEY as string, env("OFFSET_MS"), env("JOB_MS")];
const runLength = { atLeastMs: env("AT_LEAST_MS"), ...(process.env.AT_MOST_MS ? { atMostMs: env("AT_MOST_MS") } : {}) };
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on("error", () => {});
const locker = createLocker(pool);
const runs: { tick: number; start: number; end: number }[] = [];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const window = { from: Number.POSITIVE_INFINITY, until: 0 };

const job = new Cron("*/2 * * * * *", async () => {
  // The tick this call is for: croner fires on even seconds, late under load, never early.
  const tick = Math.round(Date.now() / 2_000) * 2_000;
  if (tick < window.from || tick >= window.until) return;
  await sleep(offsetMs);
  await locker.tryWithLock(
    key,
    async () => {
      const start = Date.now();
      await sleep(jobMs);
      runs.push({ tick, start, end: Date.now() });
    },
    runLength,
  );
});
const lines = goSignal();
say("ready");
const [from, until] = (await lines.go).split(" ").map(Number) as [number, number];
lines.close();
Object.assign(window, { from, until });
await sleep(until - Date.now() + 4_000);
job.stop();
for (const run of runs) say(JSON.stringify(run));
await locker.close();
await pool.end();
