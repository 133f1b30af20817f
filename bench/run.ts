/**
 * `npm run bench`: every scenario of the benchmark issue in one run on one machine, each as a
 * ratio to a floor measured in the same run. Writes bench/RESULTS.md and bench/results.svg.
 * `--quick` runs a smoke version (a few iterations) that checks the harness, not the numbers.
 */
import { execSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import pg from "pg";
import { createLocker, newLock } from "pglock";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../src/cli/throwaway-postgres.js";
import { ratio, type Summary, summarize, us } from "./stats.js";

const quick = process.argv.includes("--quick");
const ITERATIONS = quick ? 50 : 3000;
const WARMUP = quick ? 5 : 300;
const HANDOVERS = quick ? 16 : 400;
const THROUGHPUT_MS = quick ? 300 : 3000;
const SCALES = quick ? [100] : [100, 1000, 5000];
const LOCK_PER_CONNECTION_MAX = 1000; // the seed's model needs one connection per lock; see RESULTS.md

let server: ThrowawayPostgres | undefined;
let url = process.env.DATABASE_URL;
if (!url) {
  server = await startThrowawayPostgres({
    postgresFlags: ["-c", "max_connections=1200", "-c", "max_locks_per_transaction=256"],
  });
  url = server.url;
}
const out: string[] = [];
const log = (line = "") => {
  console.log(line);
  out.push(line);
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let nextKey = 1_000_000n;
const freshKey = () => nextKey++;

async function timeEach(iterations: number, op: () => Promise<unknown>): Promise<Summary> {
  for (let i = 0; i < WARMUP; i++) await op();
  const samples: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const start = performance.now();
    await op();
    samples.push(performance.now() - start);
  }
  return summarize(samples);
}

// ---------- peers ----------
type Peer =
  | {
      name: string;
      tryAcquire(key: string): Promise<(() => Promise<void>) | undefined>;
      acquire(key: string): Promise<() => Promise<void>>;
      close(): Promise<void>;
      note?: string;
    }
  | { name: string; skipped: string };

async function advisoryLockPeer(): Promise<Peer> {
  const { default: advisoryLock } = await import("advisory-lock");
  const mutexes = new Map<string, ReturnType<ReturnType<typeof advisoryLock>>>();
  const create = advisoryLock(url as string);
  const mutex = (key: string) => {
    const m = mutexes.get(key) ?? create(key);
    mutexes.set(key, m);
    return m;
  };
  return {
    name: "npm advisory-lock 2.0 (a new connection per lock)",
    tryAcquire: async (key) => {
      const unlock = await mutex(key).tryLock();
      return unlock ? () => unlock() : undefined;
    },
    acquire: async (key) => {
      const unlock = await mutex(key).lock();
      return () => unlock();
    },
    close: async () => {},
  };
}

async function redisPeer(): Promise<Peer> {
  const { default: Redis } = await import("ioredis");
  const { Mutex } = await import("redis-semaphore");
  const redis = new Redis({
    host: "127.0.0.1",
    port: 6379,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on("error", () => {});
  try {
    await redis.connect();
    await redis.ping();
  } catch {
    redis.disconnect();
    return { name: "redis-semaphore Mutex (Redis)", skipped: "no Redis reachable at 127.0.0.1:6379" };
  }
  return {
    name: "redis-semaphore 5.8 Mutex (Redis, polls every 10 ms)",
    tryAcquire: async (key) => {
      const mutex = new Mutex(redis, key, { lockTimeout: 30_000, refreshInterval: 0 });
      return (await mutex.tryAcquire()) ? () => mutex.release() : undefined;
    },
    acquire: async (key) => {
      const mutex = new Mutex(redis, key, {
        lockTimeout: 30_000,
        refreshInterval: 0,
        acquireTimeout: 60_000,
        retryInterval: 10,
      });
      await mutex.acquire();
      return () => mutex.release();
    },
    close: async () => {
      redis.disconnect();
    },
  };
}

// ---------- scenario 1 ----------
async function uncontended(peers: Peer[]) {
  log("## 1. Uncontended acquire + release, one key, sequential");
  log();
  log(`${ITERATIONS} iterations after ${WARMUP} of warm-up; latency of one acquire + release, in µs.`);
  log();
  const rows: [string, Summary | string][] = [];
  const pool = new pg.Pool({ connectionString: url, max: 6 });
  const client = await pool.connect();
  const key = String(freshKey());
  rows.push([
    "raw pg, one dedicated client (floor): `pg_try_advisory_lock` + `pg_advisory_unlock`",
    await timeEach(ITERATIONS, async () => {
      await client.query("SELECT pg_try_advisory_lock($1)", [key]);
      await client.query("SELECT pg_advisory_unlock($1)", [key]);
    }),
  ]);
  client.release();
  const lock = await newLock(pool, BigInt(key));
  rows.push([
    "pglock `Lock`: `lock()` + `unlock()`",
    await timeEach(ITERATIONS, async () => {
      await lock.lock();
      await lock.unlock();
    }),
  ]);
  await lock.close();
  const locker = createLocker(pool);
  rows.push([
    "pglock Locker: `tryAcquire()` + `release()`",
    await timeEach(ITERATIONS, async () => {
      await (await locker.tryAcquire(key))?.release();
    }),
  ]);
  rows.push(["pglock Locker: `withLock()`", await timeEach(ITERATIONS, () => locker.withLock(key, () => {}))]);
  await locker.close();
  for (const peer of peers) {
    if ("skipped" in peer) {
      rows.push([peer.name, `skipped: ${peer.skipped}`]);
      continue;
    }
    const name = `bench-${freshKey()}`;
    const iterations = peer.name.includes("advisory-lock") ? Math.min(ITERATIONS, 500) : ITERATIONS;
    rows.push([
      `${peer.name}${iterations < ITERATIONS ? ` (${iterations} iterations)` : ""}`,
      await timeEach(iterations, async () => {
        const release = await peer.tryAcquire(name);
        await release?.();
      }),
    ]);
  }
  await pool.end();
  table(["implementation", "median µs", "p99 µs", "median vs floor"], rows);
  return rows;
}

function table(header: string[], rows: [string, Summary | string][], floor = rows[0]?.[1]) {
  log(`| ${header.join(" | ")} |`);
  log(`| ${header.map(() => "---").join(" | ")} |`);
  for (const [name, value] of rows) {
    if (typeof value === "string") log(`| ${name} | ${value} | | |`);
    else
      log(`| ${name} | ${us(value.median)} | ${us(value.p99)} | ${ratio(value.median, (floor as Summary).median)} |`);
  }
  log();
}

// ---------- scenario 2 ----------
/** `contenders` loops that each take the lock, hold it briefly, release; measures release → next grant. */
async function handover(contenders: number, take: (i: number) => Promise<() => Promise<void>>): Promise<Summary> {
  const gaps: number[] = [];
  let releasedAt: number | undefined;
  let remaining = HANDOVERS + contenders;
  await Promise.all(
    Array.from({ length: contenders }, async (_, i) => {
      while (remaining > 0) {
        const release = await take(i);
        const grantedAt = performance.now();
        if (releasedAt !== undefined) gaps.push(grantedAt - releasedAt);
        remaining--;
        await sleep(1);
        releasedAt = performance.now();
        await release();
      }
    }),
  );
  return summarize(gaps.slice(contenders)); // the first grants are not hand-overs
}

async function contended(peers: Peer[]) {
  log("## 2. Hand-over under contention: 8 waiters on one key");
  log();
  log(
    `${HANDOVERS} hand-overs; time from the start of a release to the next waiter's grant, in µs. Each holder keeps the lock ~1 ms.`,
  );
  log();
  const rows: [string, Summary | string][] = [];
  const pool = new pg.Pool({ connectionString: url, max: 20 });
  const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
  let key = String(freshKey());
  rows.push([
    "raw pg: 8 clients in `pg_advisory_lock` (floor)",
    await handover(8, async (i) => {
      const client = clients[i] as pg.PoolClient;
      await client.query("SELECT pg_advisory_lock($1)", [key]);
      return async () => {
        await client.query("SELECT pg_advisory_unlock($1)", [key]);
      };
    }),
  ]);
  for (const client of clients) client.release();
  key = String(freshKey());
  const locks = await Promise.all(Array.from({ length: 8 }, () => newLock(pool, BigInt(key))));
  rows.push([
    "pglock `Lock`: 8 Locks in `waitAndLock()`",
    await handover(8, async (i) => {
      const lock = locks[i] as Awaited<ReturnType<typeof newLock>>;
      await lock.waitAndLock();
      return async () => {
        await lock.unlock();
      };
    }),
  ]);
  await Promise.all(locks.map((lock) => lock.close()));
  key = String(freshKey());
  const lockers = Array.from({ length: 8 }, () => createLocker(pool, { maxSessions: 2 }));
  rows.push([
    "pglock Locker: 8 Lockers in `acquire()`",
    await handover(8, async (i) => {
      const handle = await (lockers[i] as ReturnType<typeof createLocker>).acquire(key);
      return () => handle.release();
    }),
  ]);
  await Promise.all(lockers.map((locker) => locker.close()));
  key = String(freshKey());
  const one = createLocker(pool);
  rows.push([
    "pglock Locker: 8 `acquire()` in one Locker (queued locally)",
    await handover(8, async () => {
      const handle = await one.acquire(key);
      return () => handle.release();
    }),
  ]);
  await one.close();
  for (const peer of peers) {
    if ("skipped" in peer) {
      rows.push([peer.name, `skipped: ${peer.skipped}`]);
      continue;
    }
    const name = `bench-${freshKey()}`;
    rows.push([peer.name, await handover(8, () => peer.acquire(name))]);
  }
  await pool.end();
  table(["implementation", "median µs", "p99 µs", "median vs floor"], rows);
  return rows;
}

// ---------- scenario 3 ----------
async function throughput() {
  log("## 3. Throughput on distinct keys through one Locker (maxSessions 4)");
  log();
  log(
    `Each caller loops on its own key: \`tryAcquire\` then \`release\`, for ${THROUGHPUT_MS} ms. The floor is raw pg, sequential, one client.`,
  );
  log();
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  const client = await pool.connect();
  const key = String(freshKey());
  let ops = 0;
  let deadline = performance.now() + THROUGHPUT_MS;
  while (performance.now() < deadline) {
    await client.query("SELECT pg_try_advisory_lock($1)", [key]);
    await client.query("SELECT pg_advisory_unlock($1)", [key]);
    ops++;
  }
  client.release();
  const floor = (ops / THROUGHPUT_MS) * 1000;
  log("| callers | operations/s | vs sequential raw floor | sessions used |");
  log("| --- | --- | --- | --- |");
  log(`| raw pg, sequential (floor) | ${Math.round(floor)} | 1.00× | 1 |`);
  const results: { callers: number; opsPerSecond: number; sessions: number }[] = [];
  for (const callers of [1, 8, 64]) {
    const locker = createLocker(pool, { maxSessions: 4 });
    let done = 0;
    let sessions = 0;
    deadline = performance.now() + THROUGHPUT_MS;
    await Promise.all(
      Array.from({ length: callers }, async () => {
        const mine = freshKey();
        while (performance.now() < deadline) {
          const handle = await locker.tryAcquire(mine);
          await handle?.release();
          done++;
          sessions = Math.max(sessions, locker.stats().sessions);
        }
      }),
    );
    await locker.close();
    const opsPerSecond = (done / THROUGHPUT_MS) * 1000;
    results.push({ callers, opsPerSecond, sessions });
    log(`| ${callers} | ${Math.round(opsPerSecond)} | ${ratio(opsPerSecond, floor)} | ${sessions} |`);
  }
  log();
  await pool.end();
  return { floor, results };
}

// ---------- scenario 4 ----------
function rssMb() {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / 2 ** 20;
}

async function scale() {
  log("## 4. Scale: locks held at once");
  log();
  log("Connections counted in `pg_stat_activity` by application_name; memory is this process's resident set growth.");
  log();
  log(
    "| locks held | Locker: connections | Locker: RSS growth MB | one connection per lock: connections | one connection per lock: RSS growth MB |",
  );
  log("| --- | --- | --- | --- | --- |");
  const admin = new pg.Pool({ connectionString: url, max: 1 });
  const count = async (app: string) =>
    (await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [app])).rows[0]
      .n as number;
  const results: { n: number; lockerConnections: number }[] = [];
  for (const n of SCALES) {
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    let before = rssMb();
    const locker = createLocker(pool, { maxSessions: 4, applicationName: "bench-locker" });
    const base = freshKey() * 10_000n;
    const handles = await Promise.all(Array.from({ length: n }, (_, i) => locker.acquire(base + BigInt(i))));
    const lockerConnections = await count("bench-locker");
    const lockerMb = rssMb() - before;
    await Promise.all(handles.map((h) => h.release()));
    await locker.close();
    await pool.end();
    results.push({ n, lockerConnections });
    let seedColumns = `not run: ${n} connections exceed this run's limit of ${LOCK_PER_CONNECTION_MAX} | `;
    if (n <= LOCK_PER_CONNECTION_MAX) {
      const perLock = new pg.Pool({ connectionString: url, max: n });
      before = rssMb();
      const locks = await Promise.all(
        Array.from({ length: n }, (_, i) => newLock(perLock, base + BigInt(i), { applicationName: "bench-seed" })),
      );
      await Promise.all(locks.map((lock) => lock.lock()));
      const seedConnections = await count("bench-seed");
      const seedMb = rssMb() - before;
      await Promise.all(locks.map((lock) => lock.close()));
      await perLock.end();
      seedColumns = `${seedConnections} | ${seedMb.toFixed(1)}`;
    }
    log(`| ${n} | ${lockerConnections} | ${lockerMb.toFixed(1)} | ${seedColumns} |`);
  }
  log();
  await admin.end();
  return results;
}

// ---------- report ----------
function versions() {
  const pkg = (name: string) => {
    try {
      return JSON.parse(execSync(`npm ls ${name} --depth=0 --json`, { encoding: "utf8" })).dependencies[name].version;
    } catch {
      return "?";
    }
  };
  return {
    node: process.version,
    pg: pkg("pg"),
    advisoryLock: pkg("advisory-lock"),
    redisSemaphore: pkg("redis-semaphore"),
  };
}

function svg(bars: { label: string; value: number }[], title: string): string {
  const width = 760;
  const rowHeight = 26;
  const left = 380;
  const max = Math.max(...bars.map((b) => b.value), 1);
  const scaleX = (v: number) => ((width - left - 80) * v) / max;
  const rows = bars
    .map((bar, i) => {
      const y = 40 + i * rowHeight;
      return `<text x="${left - 8}" y="${y + 15}" text-anchor="end" font-size="12">${escapeXml(bar.label)}</text>
<rect x="${left}" y="${y}" width="${scaleX(bar.value).toFixed(1)}" height="18" fill="${bar.value <= 1.2 ? "#2e7d32" : "#c62828"}"/>
<text x="${left + scaleX(bar.value) + 6}" y="${y + 14}" font-size="12">${bar.value.toFixed(2)}×</text>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${60 + bars.length * rowHeight}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">${escapeXml(title)}</text>
${rows}
</svg>
`;
}
const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/`/g, "");

const started = new Date();
const versionPool = new pg.Pool({ connectionString: url, max: 1 });
const { rows: serverRows } = await versionPool.query("SELECT version()");
await versionPool.end();
const peers = [await advisoryLockPeer(), await redisPeer()];
const v = versions();
log("# pglock benchmarks");
log();
log(
  `Command: \`npm run bench${quick ? " -- --quick" : ""}\` · ${started.toISOString()} · ${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
);
log(
  `Node ${v.node}, pg ${v.pg}, advisory-lock ${v.advisoryLock}, redis-semaphore ${v.redisSemaphore}; ${String(serverRows[0]?.version).split(",")[0]} on loopback${server ? " (throwaway, started for this run)" : ""}.`,
);
if (quick) log("**Quick mode: a smoke run of the harness; these numbers mean nothing.**");
log();
const one = await uncontended(peers);
const two = await contended(peers);
const three = await throughput();
const four = await scale();
for (const peer of peers) if (!("skipped" in peer)) await peer.close();

log("## Targets");
log();
const floor1 = (one[0] as [string, Summary])[1].median;
const lockerRow = (one.find(([name]) => name.includes("`tryAcquire()`")) as [string, Summary])[1];
const floor2 = (two[0] as [string, Summary])[1].median;
const handRow = (two.find(([name]) => name.includes("8 Lockers")) as [string, Summary])[1];
const c64 = three.results.find((r) => r.callers === 64);
const s5000 = four.find((r) => r.n === 5000);
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");
log("| target | measured | verdict |");
log("| --- | --- | --- |");
log(
  `| Locker acquire+release within 1.15× of the raw floor (median) | ${ratio(lockerRow.median, floor1)} | ${verdict(lockerRow.median <= 1.15 * floor1)} |`,
);
log(
  `| hand-over median within 1.2× of raw | ${ratio(handRow.median, floor2)} | ${verdict(handRow.median <= 1.2 * floor2)} |`,
);
if (c64)
  log(
    `| concurrency 64, distinct keys: ≥ 5× the sequential raw floor on ≤ 4 connections | ${ratio(c64.opsPerSecond, three.floor)} on ${c64.sessions} | ${verdict(c64.opsPerSecond >= 5 * three.floor && c64.sessions <= 4)} |`,
  );
if (s5000)
  log(
    `| 5,000 held locks on ≤ 4 connections | ${s5000.lockerConnections} | ${verdict(s5000.lockerConnections <= 4)} |`,
  );
log();

const bars = [
  ...one
    .filter(([, s]) => typeof s !== "string")
    .map(([name, s]) => ({
      label: `1. ${name.replace(/\(.*?\)|`/g, "").slice(0, 52)}`,
      value: (s as Summary).median / floor1,
    })),
  ...two
    .filter(([, s]) => typeof s !== "string")
    .map(([name, s]) => ({
      label: `2. ${name.replace(/\(.*?\)|`/g, "").slice(0, 52)}`,
      value: (s as Summary).median / floor2,
    })),
];
const resultsFile = quick ? "bench/RESULTS.quick.md" : "bench/RESULTS.md";
writeFileSync(resultsFile, `${out.join("\n")}\n`);
if (!quick)
  writeFileSync("bench/results.svg", svg(bars, "median latency as a multiple of the raw pg floor (lower is better)"));
console.log(`\nwrote ${resultsFile}${quick ? "" : " and bench/results.svg"}`);
await server?.stop();
