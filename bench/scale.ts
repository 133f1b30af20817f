/**
 * Scenario 4: many locks held at once. Connections are counted in pg_stat_activity by the name that
 * begins application_name; memory is this process's growth after a full GC (`--expose-gc`): RSS
 * (what the goal counts) and the V8 heap still in use (what pglock keeps per lock).
 */
import pg from "pg";
import { createLocker, newLock } from "pglock";
import { freshKey, log, quick } from "./harness.js";

const SCALES = quick ? [100] : [100, 1000, 5000];
const LOCK_PER_CONNECTION_MAX = 1000; // the seed's model needs one connection per lock
/** Locks are taken 64 at a time, as 64 callers would; a burst of 5,000 grows the heap for its garbage. */
const WAVE = 64;

function memory() {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  return { rss, heapUsed };
}

export interface ScaleRun {
  n: number;
  lockerConnections: number;
  rssBytesPerLock: number;
  heapBytesPerLock: number;
}

export async function scale(url: string): Promise<ScaleRun[]> {
  log("## 4. Scale: locks held at once");
  log();
  log(
    `Locks taken ${WAVE} at a time. Connections counted in \`pg_stat_activity\`; memory is this process's growth after a full GC: resident set (RSS) and V8 heap in use.`,
  );
  log();
  log(
    "| locks held | Locker: connections | Locker: RSS per lock | Locker: heap per lock | one connection per lock: connections | one connection per lock: RSS per lock |",
  );
  log("| --- | --- | --- | --- | --- | --- |");
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  const count = async (name: string) =>
    (
      await admin.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
        [name],
      )
    ).rows[0].n as number;
  const results: ScaleRun[] = [];
  for (const n of SCALES) {
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    const locker = createLocker(pool, { maxSessions: 4, applicationName: "bench-locker" });
    const base = freshKey() * 10_000n;
    // Warm-up: sessions open and statements prepared before the baseline is read.
    await Promise.all(
      (await Promise.all([1n, 2n, 3n, 4n].map((i) => locker.acquire(-base - i)))).map((h) => h.release()),
    );
    const before = memory();
    const handles = [];
    for (let start = 0; start < n; start += WAVE) {
      const wave = Array.from({ length: Math.min(WAVE, n - start) }, (_, i) =>
        locker.acquire(base + BigInt(start + i)),
      );
      handles.push(...(await Promise.all(wave)));
    }
    const after = memory();
    const lockerConnections = await count("bench-locker");
    await Promise.all(handles.map((h) => h.release()));
    await locker.close();
    await pool.end();
    const run = {
      n,
      lockerConnections,
      rssBytesPerLock: (after.rss - before.rss) / n,
      heapBytesPerLock: (after.heapUsed - before.heapUsed) / n,
    };
    results.push(run);
    let seedColumns = `not run: ${n} connections exceed this run's limit of ${LOCK_PER_CONNECTION_MAX} | `;
    if (n <= LOCK_PER_CONNECTION_MAX) {
      const perLock = new pg.Pool({ connectionString: url, max: n });
      const start = memory();
      const locks = await Promise.all(
        Array.from({ length: n }, (_, i) => newLock(perLock, base + BigInt(i), { applicationName: "bench-seed" })),
      );
      await Promise.all(locks.map((lock) => lock.lock()));
      const end = memory();
      const seedConnections = await count("bench-seed");
      await Promise.all(locks.map((lock) => lock.close()));
      await perLock.end();
      seedColumns = `${seedConnections} | ${kb((end.rss - start.rss) / n)}`;
    }
    log(`| ${n} | ${lockerConnections} | ${kb(run.rssBytesPerLock)} | ${kb(run.heapBytesPerLock)} | ${seedColumns} |`);
  }
  log();
  await admin.end();
  return results;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(2)} KB`;
