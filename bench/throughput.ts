/**
 * Scenario 3: callers on distinct keys through one Locker on at most 4 sessions, each looping on
 * `tryAcquire` then `release`. Compared with pgbench on the same statements: one statement per
 * operation over 4 connections (the baseline), and 64 locks per statement (the server's ceiling).
 */

import pg from "pg";
import { createLocker } from "pglock";
import { freshKey, log, quick } from "./harness.js";
import type { PgbenchResult } from "./pgbench.js";

export const THROUGHPUT_MS = quick ? 300 : 3000;
export const CEILING_BATCH = 64;

export interface ThroughputRun {
  callers: number;
  pairsPerSecond: number;
  /** Node CPU (user + system) per try + release pair, in µs. */
  cpuUsPerPair: number;
  sessions: number;
}

/** Runs `callers` loops on distinct keys for `ms`; also what pglock's profile child runs. */
export async function lockerLoops(url: string, callers: number, ms: number): Promise<ThroughputRun> {
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  const locker = createLocker(pool, { maxSessions: 4 });
  const keys = Array.from({ length: callers }, () => freshKey());
  const loop = async (deadline: number, count: () => void) => {
    await Promise.all(
      keys.map(async (key) => {
        while (performance.now() < deadline) {
          await (await locker.tryAcquire(key))?.release();
          count();
        }
      }),
    );
  };
  await loop(performance.now() + Math.min(500, ms), () => {}); // warm-up: sessions open, statements prepared
  let done = 0;
  let sessions = 0;
  const cpu = process.cpuUsage();
  await loop(performance.now() + ms, () => {
    done++;
    sessions = Math.max(sessions, locker.stats().sessions);
  });
  const used = process.cpuUsage(cpu);
  await locker.close();
  await pool.end();
  return {
    callers,
    pairsPerSecond: (done / ms) * 1000,
    cpuUsPerPair: (used.user + used.system) / done,
    sessions,
  };
}

export async function throughput(
  url: string,
  pgbench: { pairs(): PgbenchResult | string; ceiling(): PgbenchResult | string },
) {
  log("## 3. Throughput on distinct keys through one Locker (maxSessions 4)");
  log();
  log(
    `Each caller loops on its own key: \`tryAcquire\` then \`release\`, for ${THROUGHPUT_MS} ms after a warm-up. pgbench runs the same two statements for the same time, on one thread. Node CPU is \`process.cpuUsage()\` (user + system) over the run, per pair.`,
  );
  log();
  const pairs = pgbench.pairs();
  const ceiling = pgbench.ceiling();
  const baseline = typeof pairs === "string" ? undefined : pairs.tps;
  const ceilingPairs = typeof ceiling === "string" ? undefined : ceiling.tps * CEILING_BATCH;
  const vs = (value: number) => (baseline ? `${(value / baseline).toFixed(2)}×` : "");
  const ofCeiling = (value: number) => (ceilingPairs ? `${((100 * value) / ceilingPairs).toFixed(1)}%` : "");
  log("| who | pairs/s | vs pgbench -c 4 | share of the batched ceiling | Node CPU µs/pair | sessions |");
  log("| --- | --- | --- | --- | --- | --- |");
  log(
    typeof pairs === "string"
      ? `| pgbench \`-M prepared -c 4\`, one statement per operation (baseline) | ${pairs} | | | | |`
      : `| pgbench \`-M prepared -c 4\`, one statement per operation (baseline) | ${Math.round(pairs.tps)} | 1.00× | ${ofCeiling(pairs.tps)} | | 4 |`,
  );
  log(
    typeof ceiling === "string"
      ? `| pgbench \`-M prepared -c 4\`, ${CEILING_BATCH} try-locks then ${CEILING_BATCH} unlocks per statement (ceiling) | ${ceiling} | | | | |`
      : `| pgbench \`-M prepared -c 4\`, ${CEILING_BATCH} try-locks then ${CEILING_BATCH} unlocks per statement (ceiling) | ${Math.round(ceilingPairs as number)} | ${vs(ceilingPairs as number)} | 100% | | 4 |`,
  );
  const runs: ThroughputRun[] = [];
  for (const callers of quick ? [64] : [1, 8, 64]) {
    const run = await lockerLoops(url, callers, THROUGHPUT_MS);
    runs.push(run);
    log(
      `| pglock Locker, ${callers} caller${callers > 1 ? "s" : ""} | ${Math.round(run.pairsPerSecond)} | ${vs(run.pairsPerSecond)} | ${ofCeiling(run.pairsPerSecond)} | ${run.cpuUsPerPair.toFixed(1)} | ${run.sessions} |`,
    );
  }
  log();
  return { baseline, ceilingPairs, runs };
}
