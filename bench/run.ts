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
import postgres from "postgres";
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

// ---------- interleaving ----------
/**
 * Each implementation is measured in ROUNDS slices, taken in turn, so that a drift of the machine
 * (the server's other work, CPU frequency) spreads over all of them instead of favouring one.
 */
const ROUNDS = quick ? 2 : 10;

interface Contender {
  name: string;
  /** Samples per round, when the implementation is too slow for the full count. */
  perRound?: number;
  setup(): Promise<{ measure(count: number): Promise<number[]>; teardown(): Promise<void> }>;
}

async function interleaved(contenders: Contender[], perRound: number): Promise<[string, Summary | string][]> {
  const running = [];
  for (const contender of contenders)
    running.push({ contender, ...(await contender.setup()), samples: [] as number[] });
  for (let round = 0; round < ROUNDS; round++) {
    for (const entry of running) entry.samples.push(...(await entry.measure(entry.contender.perRound ?? perRound)));
  }
  for (const entry of running) await entry.teardown();
  return running.map((entry) => [entry.contender.name, summarize(entry.samples)]);
}

async function timeEach(count: number, op: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < Math.min(WARMUP, count); i++) await op();
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await op();
    samples.push(performance.now() - start);
  }
  return samples;
}

function sequential(
  name: string,
  setup: () => Promise<{ op(): Promise<unknown>; teardown(): Promise<void> }>,
  perRound?: number,
): Contender {
  return {
    name,
    perRound,
    async setup() {
      const { op, teardown } = await setup();
      return { measure: (count) => timeEach(count, op), teardown };
    },
  };
}

// ---------- scenario 1 ----------
async function uncontended(peers: Peer[]) {
  log("## 1. Uncontended acquire + release, one key, sequential");
  log();
  log(
    `${ITERATIONS} samples per implementation, taken in ${ROUNDS} interleaved rounds (each after ${WARMUP} of warm-up); latency of one acquire + release, in µs.`,
  );
  log();
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  const key = String(freshKey());
  const contenders: Contender[] = [
    sequential("raw pg, one dedicated client (floor): `pg_try_advisory_lock` + `pg_advisory_unlock`", async () => {
      const client = await pool.connect();
      return {
        op: async () => {
          await client.query("SELECT pg_try_advisory_lock($1)", [key]);
          await client.query("SELECT pg_advisory_unlock($1)", [key]);
        },
        teardown: async () => client.release(),
      };
    }),
    sequential("pglock `Lock`: `lock()` + `unlock()`", async () => {
      const lock = await newLock(pool, BigInt(key));
      return {
        op: async () => {
          await lock.lock();
          await lock.unlock();
        },
        teardown: () => lock.close(),
      };
    }),
    sequential("pglock Locker: `tryAcquire()` + `release()`", async () => {
      const locker = createLocker(pool);
      return { op: async () => (await locker.tryAcquire(key))?.release(), teardown: () => locker.close() };
    }),
    sequential("pglock Locker: `withLock()`", async () => {
      const locker = createLocker(pool);
      return { op: () => locker.withLock(key, () => {}), teardown: () => locker.close() };
    }),
    sequential("raw postgres.js, one reserved connection: `pg_try_advisory_lock` + `pg_advisory_unlock`", async () => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      const reserved = await sql.reserve();
      return {
        op: async () => {
          await reserved.unsafe("SELECT pg_try_advisory_lock($1)", [key]);
          await reserved.unsafe("SELECT pg_advisory_unlock($1)", [key]);
        },
        teardown: async () => {
          reserved.release();
          await sql.end();
        },
      };
    }),
    sequential("pglock Locker on postgres.js: `tryAcquire()` + `release()`", async () => {
      const sql = postgres(url, { onnotice: () => {} });
      const locker = createLocker(sql);
      return {
        op: async () => (await locker.tryAcquire(key))?.release(),
        teardown: async () => {
          await locker.close();
          await sql.end();
        },
      };
    }),
  ];
  const skipped: [string, string][] = [];
  for (const peer of peers) {
    if ("skipped" in peer) {
      skipped.push([peer.name, `skipped: ${peer.skipped}`]);
      continue;
    }
    const name = `bench-${freshKey()}`;
    const slow = peer.name.includes("advisory-lock");
    contenders.push(
      sequential(
        `${peer.name}${slow ? ` (${Math.ceil(500 / ROUNDS) * ROUNDS} samples)` : ""}`,
        async () => ({
          op: async () => {
            const release = await peer.tryAcquire(name);
            await release?.();
          },
          teardown: async () => {},
        }),
        slow ? Math.ceil(Math.min(ITERATIONS, 500) / ROUNDS) : undefined,
      ),
    );
  }
  const rows = [...(await interleaved(contenders, Math.ceil(ITERATIONS / ROUNDS))), ...skipped];
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
/** `contenders` loops that each take the lock, hold it ~1 ms, release; measures release → next grant. */
async function handover(contenders: number, count: number, take: (i: number) => Promise<() => Promise<void>>) {
  const gaps: number[] = [];
  let releasedAt: number | undefined;
  let remaining = count + contenders;
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
  return gaps.slice(contenders); // the first grants are not hand-overs
}

function contest(
  name: string,
  setup: () => Promise<{ take(i: number): Promise<() => Promise<void>>; teardown(): Promise<void> }>,
): Contender {
  return {
    name,
    async setup() {
      const { take, teardown } = await setup();
      return { measure: (count) => handover(8, count, take), teardown };
    },
  };
}

async function contended(peers: Peer[]) {
  log("## 2. Hand-over under contention: 8 waiters on one key");
  log();
  log(
    `${HANDOVERS} hand-overs per implementation in ${ROUNDS} interleaved rounds; time from the start of a release to the next waiter's grant, in µs. Each holder keeps the lock ~1 ms.`,
  );
  log();
  const pool = new pg.Pool({ connectionString: url, max: 40 });
  const contenders: Contender[] = [
    contest("raw pg: 8 clients in `pg_advisory_lock` (floor)", async () => {
      const key = String(freshKey());
      const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
      return {
        take: async (i) => {
          const client = clients[i] as pg.PoolClient;
          await client.query("SELECT pg_advisory_lock($1)", [key]);
          return async () => {
            await client.query("SELECT pg_advisory_unlock($1)", [key]);
          };
        },
        teardown: async () => {
          for (const client of clients) client.release();
        },
      };
    }),
    contest("pglock `Lock`: 8 Locks in `waitAndLock()`", async () => {
      const key = freshKey();
      const locks = await Promise.all(Array.from({ length: 8 }, () => newLock(pool, key)));
      return {
        take: async (i) => {
          const lock = locks[i] as Awaited<ReturnType<typeof newLock>>;
          await lock.waitAndLock();
          return async () => {
            await lock.unlock();
          };
        },
        teardown: async () => {
          await Promise.all(locks.map((lock) => lock.close()));
        },
      };
    }),
    contest("pglock Locker: 8 Lockers in `acquire()`", async () => {
      const key = freshKey();
      const lockers = Array.from({ length: 8 }, () => createLocker(pool, { maxSessions: 2 }));
      return {
        take: async (i) => {
          const handle = await (lockers[i] as ReturnType<typeof createLocker>).acquire(key);
          return () => handle.release();
        },
        teardown: async () => {
          await Promise.all(lockers.map((locker) => locker.close()));
        },
      };
    }),
    contest("pglock Locker: 8 `acquire()` in one Locker (queued locally)", async () => {
      const key = freshKey();
      const one = createLocker(pool);
      return {
        take: async () => {
          const handle = await one.acquire(key);
          return () => handle.release();
        },
        teardown: () => one.close(),
      };
    }),
  ];
  const skipped: [string, string][] = [];
  for (const peer of peers) {
    if ("skipped" in peer) {
      skipped.push([peer.name, `skipped: ${peer.skipped}`]);
      continue;
    }
    const name = `bench-${freshKey()}`;
    contenders.push(contest(peer.name, async () => ({ take: () => peer.acquire(name), teardown: async () => {} })));
  }
  const rows = [...(await interleaved(contenders, Math.ceil(HANDOVERS / ROUNDS))), ...skipped];
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
    postgresJs: pkg("postgres"),
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
<title>${escapeXml(title)}</title>
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
  `Node ${v.node}, pg ${v.pg}, postgres.js ${v.postgresJs}, advisory-lock ${v.advisoryLock}, redis-semaphore ${v.redisSemaphore}; ${String(serverRows[0]?.version).split(",")[0]} on loopback${server ? " (throwaway, started for this run)" : ""}.`,
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
