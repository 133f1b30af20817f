/**
 * Scenario 5: many waits at once (issue #23). The server's answer to a plain `SELECT 1`, and this
 * process's CPU, while 400 seed Locks wait on one held key for longer than the deadlock check's
 * delay: without `holding` (the default: no look at all), and with `holding` (every wait watched; one
 * look per pool per interval serves them all). The baseline is the same probe with nothing waiting.
 */
import pg from "pg";
import { type Lock, newLock } from "pglock";
import { freshKey, log, quick, sleep } from "./harness.js";
import { ratio, type Summary, summarize, us } from "./stats.js";

const WAITS = quick ? 20 : 400;
const PROBE_MS = quick ? 300 : 3_000;
/** Longer than deadlockTimeoutMs's default (1000), so that every wait is looked at. */
const SETTLE_MS = 1_500;

export interface WaitsRun {
  name: string;
  probe: Summary;
  /** Waits that rejected (their session was given up on) instead of being granted. */
  lost: number;
  cpuPercent: number;
}

async function probe(pool: pg.Pool): Promise<{ probe: Summary; cpuPercent: number }> {
  const samples: number[] = [];
  const cpu = process.cpuUsage();
  const started = performance.now();
  while (performance.now() - started < PROBE_MS) {
    const t = performance.now();
    await pool.query("SELECT 1");
    samples.push(performance.now() - t);
    await sleep(5);
  }
  const used = process.cpuUsage(cpu);
  const wallUs = (performance.now() - started) * 1000;
  return { probe: summarize(samples), cpuPercent: (100 * (used.user + used.system)) / wallUs };
}

/** Opens `n` Locks 50 at a time: 800 connections at once would overload a small server's start-up. */
async function inWaves(n: number, open: () => Promise<Lock>): Promise<Lock[]> {
  const locks: Lock[] = [];
  while (locks.length < n)
    locks.push(...(await Promise.all(Array.from({ length: Math.min(50, n - locks.length) }, open))));
  return locks;
}

async function waiting(url: string, hinted: boolean): Promise<{ probe: Summary; cpuPercent: number; lost: number }> {
  const pool = new pg.Pool({ connectionString: url, max: 2 * WAITS + 4 });
  pool.on("error", () => {});
  const probePool = new pg.Pool({ connectionString: url, max: 1 });
  const key = freshKey();
  const blocker = await newLock(pool, key);
  await blocker.lock();
  const holders: Lock[] = hinted ? await inWaves(WAITS, () => newLock(pool, freshKey())) : [];
  await Promise.all(holders.map((lock) => lock.lock()));
  const waiters = await inWaves(WAITS, () => newLock(pool, key));
  // Each outcome is taken at once: a wait whose session was given up on (a liveness probe unanswered
  // while the server is saturated) is counted, never an unhandled rejection that ends the run.
  const granted = waiters.map((lock, i) =>
    lock.waitAndLock(hinted ? { holding: [holders[i] as Lock] } : {}).then(
      () => lock.unlock().then(() => false),
      () => true,
    ),
  );
  await sleep(SETTLE_MS);
  await probePool.query("SELECT 1");
  const measured = await probe(probePool);
  await blocker.unlock();
  const lost = (await Promise.all(granted)).filter(Boolean).length;
  await Promise.all([blocker, ...holders, ...waiters].map((lock) => lock.close().catch(() => {})));
  await Promise.all([pool.end(), probePool.end()]);
  return { ...measured, lost };
}

export async function manyWaits(url: string): Promise<WaitsRun[]> {
  log(`## 5. Many waits: ${WAITS} seed Locks waiting on one key`);
  log();
  log(
    `The server's answer to \`SELECT 1\` on a connection of its own, every 5 ms for ${PROBE_MS / 1000} s, once the waits have lasted ${SETTLE_MS / 1000} s (past the deadlock check's delay of 1 s); and this process's CPU meanwhile.`,
  );
  log();
  const probePool = new pg.Pool({ connectionString: url, max: 1 });
  await probePool.query("SELECT 1");
  const idle = await probe(probePool);
  await probePool.end();
  const runs: WaitsRun[] = [
    { name: "nothing waits (baseline)", ...idle, lost: 0 },
    { name: `${WAITS} waits, holding nothing (no look: the default)`, ...(await waiting(url, false)) },
    { name: `${WAITS} waits, each \`{ holding }\` another Lock (all watched)`, ...(await waiting(url, true)) },
  ];
  log("| while | SELECT 1 median µs | p99 µs | median vs baseline | Node CPU | waits that lost their session |");
  log("| --- | --- | --- | --- | --- | --- |");
  for (const run of runs) {
    log(
      `| ${run.name} | ${us(run.probe.median)} | ${us(run.probe.p99)} | ${ratio(run.probe.median, idle.probe.median)} | ${run.cpuPercent.toFixed(1)}% | ${run.lost} |`,
    );
  }
  log();
  return runs;
}
