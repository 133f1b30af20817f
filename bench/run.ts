/**
 * `npm run bench`: every scenario in one run on one machine, each as a ratio to a baseline measured
 * in the same run, then the targets of issue #15. Writes bench/RESULTS.md and bench/results.svg.
 * `--quick` runs a smoke version (a few iterations) that checks the harness, not the numbers.
 *
 * Scenarios: uncontended.ts (1), handover.ts (2), throughput.ts and profile.ts (3), scale.ts (4),
 * waits.ts (5);
 * pgbench.ts and bun-uncontended.ts give the peer rows.
 *
 * On a machine with two CPUs or more, the run pins itself (and pgbench, and Bun) to CPU 0 and the
 * throwaway server it starts to CPU 1 (taskset): otherwise the client and the server take turns on
 * one core at random, and a median of a round trip moves between two modes from run to run.
 */
import { execFileSync, execSync, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import pg from "pg";
import { startThrowawayPostgres, type ThrowawayPostgres } from "../tools/throwaway-postgres.js";
import { handovers } from "./handover.js";
import { find, log, quick, type Row, reportText } from "./harness.js";
import { advisoryLockPeer, redisPeer } from "./peers.js";
import { batchScript, PAIR_SCRIPT, pgbenchVersion, runPgbench } from "./pgbench.js";
import { profileThroughput } from "./profile.js";
import { scale } from "./scale.js";
import { type Summary, us } from "./stats.js";
import { type Bar, svg } from "./svg.js";
import { CEILING_BATCH, THROUGHPUT_MS, throughput } from "./throughput.js";
import { uncontended } from "./uncontended.js";
import { manyWaits } from "./waits.js";

/** Pins every thread of this process to `cpu`; false where taskset is missing. */
function pinSelf(cpu: string): boolean {
  try {
    execFileSync("taskset", ["-a", "-p", "-c", cpu, String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

let server: ThrowawayPostgres | undefined;
let url = process.env.DATABASE_URL;
let pinning: string;
const canPin = cpus().length >= 2 && !url && pinSelf("1");
if (!url) {
  // Started while this process is on CPU 1: the server and every backend it forks inherit it.
  server = await startThrowawayPostgres({
    postgresFlags: ["-c", "max_connections=1200", "-c", "max_locks_per_transaction=256"],
  });
  url = server.url;
}
if (canPin && pinSelf("0")) {
  pinning = "client on CPU 0 (Node, pgbench, Bun), server on CPU 1 (`taskset`)";
} else {
  pinning = "not pinned (a DATABASE_URL server, one CPU, or no taskset): client and server share the CPUs";
}
const clientCpu = pinning.startsWith("client") ? "0" : undefined;

function versions() {
  const pkg = (name: string) => {
    try {
      return JSON.parse(execSync(`npm ls ${name} --depth=0 --json`, { encoding: "utf8" })).dependencies[name].version;
    } catch {
      return "?";
    }
  };
  return {
    pg: pkg("pg"),
    postgresJs: pkg("postgres"),
    advisoryLock: pkg("advisory-lock"),
    redisSemaphore: pkg("redis-semaphore"),
  };
}

const started = new Date();
const commit = (() => {
  try {
    return execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
})();
const versionPool = new pg.Pool({ connectionString: url, max: 1 });
const { rows: serverRows } = await versionPool.query("SELECT version()");
await versionPool.end();
const peers = [await advisoryLockPeer(url), await redisPeer()];
const v = versions();
const pgbench = pgbenchVersion();
const missingPgbench = "not run: pgbench is not installed (Debian: `apt install postgresql-client`)";
const seconds = Math.max(1, Math.round(THROUGHPUT_MS / 1000));
log("# pglock benchmarks");
log();
log(
  `Command: \`npm run bench${quick ? " -- --quick" : ""}\` at commit ${commit} · ${started.toISOString()} · ${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
);
log(
  `Node ${process.version}, pg ${v.pg}, postgres.js ${v.postgresJs}, advisory-lock ${v.advisoryLock}, redis-semaphore ${v.redisSemaphore}, ${pgbench ?? "no pgbench"}; ${String(serverRows[0]?.version).split(",")[0]} on loopback${server ? " (throwaway, started for this run)" : ""}. CPUs: ${pinning}.`,
);
if (quick) log("**Quick mode: a smoke run of the harness; these numbers mean nothing.**");
log();

const one = await uncontended(url, peers, () =>
  pgbench ? runPgbench(url as string, PAIR_SCRIPT, { clients: 1, seconds, pin: clientCpu }) : missingPgbench,
);

log("### The same under Bun");
log();
const bunRows = runBun(url);
if (typeof bunRows === "string") log(bunRows);
else {
  log("| implementation | median µs | p99 µs | median vs baseline |");
  log("| --- | --- | --- | --- |");
  const base = ((bunRows[0] as Row)[1] as Summary).median;
  for (const [name, s] of bunRows as [string, Summary][])
    log(
      `| ${name} | ${(s.median * 1000).toFixed(1)} | ${(s.p99 * 1000).toFixed(1)} | ${(s.median / base).toFixed(2)}× |`,
    );
}
log();

const two = await handovers(url, peers);
const three = await throughput(url, {
  pairs: () =>
    pgbench ? runPgbench(url as string, PAIR_SCRIPT, { clients: 4, seconds, pin: clientCpu }) : missingPgbench,
  ceiling: () =>
    pgbench
      ? runPgbench(url as string, batchScript(CEILING_BATCH), { clients: 4, seconds, pin: clientCpu })
      : missingPgbench,
});
profileThroughput(url, THROUGHPUT_MS, clientCpu);
const four = await scale(url);
const five = await manyWaits(url);
for (const peer of peers) if (!("skipped" in peer)) await peer.close();

/** Scenario 1's rows under Bun, from bench/bun-uncontended.ts run by the bun of devDependencies. */
function runBun(target: string): Row[] | string {
  const bun = ["node_modules/.bin/bun", "bench/bun-uncontended.ts", ...(quick ? ["--quick"] : [])];
  const [command, ...args] = clientCpu ? ["taskset", "-c", clientCpu, ...bun] : bun;
  const child = spawnSync(command as string, args, { env: { ...process.env, DATABASE_URL: target }, encoding: "utf8" });
  const line = child.stdout?.split("\n").find((text) => text.startsWith("BUN_ROWS "));
  if (child.status !== 0 || !line)
    return `not run: Bun failed (${(child.stderr ?? "").split("\n")[0] || child.status})`;
  const version = spawnSync("node_modules/.bin/bun", ["--version"], { encoding: "utf8" }).stdout.trim();
  log(`Bun ${version}, pg ${v.pg}; the same interleaved rounds as above.`);
  log();
  return JSON.parse(line.slice("BUN_ROWS ".length)) as Row[];
}

// ---------- targets ----------
log("## Targets (issue #15)");
log();
const verdict = (ok: boolean | undefined) => (ok === undefined ? "not measured" : ok ? "met" : "**missed**");
const times = (value: number, base: number) => `${(value / base).toFixed(2)}×`;
const raw1 = find(one, "(baseline)") as Summary;
const lock1 = find(one, "pglock `Lock`") as Summary;
const locker1 = find(one, "`tryAcquire()` + `release()`") as Summary;
const raw2 = find(two, "(baseline)") as Summary;
const lockers2 = find(two, "8 Lockers") as Summary;
const locks2 = find(two, "8 Locks") as Summary;
const c64 = three.runs.find((run) => run.callers === 64);
const s5000 = four.find((run) => run.n === 5000) ?? four.at(-1);
log("| goal | measured | verdict |");
log("| --- | --- | --- |");
for (const [label, row] of [
  ["`Lock` lock + unlock", lock1],
  ["Locker tryAcquire + release", locker1],
] as const) {
  log(
    `| ${label} within 1.05× of raw \`pg\` (median; stretch: below 1.00×) | ${times(row.median, raw1.median)}; p99 ${(row.p99 * 1000).toFixed(0)} µs vs ${(raw1.p99 * 1000).toFixed(0)} µs | ${verdict(row.median <= 1.05 * raw1.median)}${row.median < raw1.median ? " (stretch met)" : ""} |`,
  );
}
for (const [label, row] of [
  ["8 Lockers", lockers2],
  ["8 Locks", locks2],
] as const) {
  log(
    `| hand-over, ${label}, within 1.15× of raw \`pg_advisory_lock\` waiters (median) | ${times(row.median, raw2.median)} | ${verdict(row.median <= 1.15 * raw2.median)} |`,
  );
}
if (c64) {
  const base = three.baseline;
  log(
    `| 64 callers on ≤ 4 sessions: ≥ 5× pgbench \`-M prepared -c 4\` (stretch 7×) | ${base ? times(c64.pairsPerSecond, base) : "no pgbench"} on ${c64.sessions} sessions (${Math.round(c64.pairsPerSecond)} pairs/s); ${three.ceilingPairs ? `${((100 * c64.pairsPerSecond) / three.ceilingPairs).toFixed(1)}% of the batched ceiling` : ""} | ${verdict(base === undefined ? undefined : c64.pairsPerSecond >= 5 * base && c64.sessions <= 4)} |`,
  );
  log(
    `| Node CPU per pair at 64 callers ≤ 10 µs | ${c64.cpuUsPerPair.toFixed(1)} µs | ${verdict(c64.cpuUsPerPair <= 10)} |`,
  );
}
const hintedWaits = five[2];
if (hintedWaits)
  log(
    `| a server \`SELECT 1\` under 5 ms while 400 waits are watched by the deadlock check (issue #23) | median ${us(hintedWaits.probe.median)} µs, p99 ${us(hintedWaits.probe.p99)} µs | ${verdict(hintedWaits.probe.p99 < 5)} |`,
  );
if (s5000)
  log(
    `| ≤ 2 KB of RSS per held lock at ${s5000.n.toLocaleString("en")} locks, on ≤ 4 connections | ${(s5000.rssBytesPerLock / 1024).toFixed(2)} KB RSS (${(s5000.heapBytesPerLock / 1024).toFixed(2)} KB of heap) on ${s5000.lockerConnections} | ${verdict(s5000.rssBytesPerLock <= 2048 && s5000.lockerConnections <= 4)} |`,
  );
log();

const bar = (scenario: string, rows: Row[], base: Summary, goal: number, only: RegExp): Bar[] =>
  rows
    .filter(([name, s]) => typeof s !== "string" && only.test(name))
    .map(([name, s]) => ({
      label: `${scenario}. ${name.replace(/\(.*?\)|`/g, "").slice(0, 58)}`,
      value: (s as Summary).median / base.median,
      goal,
    }));
const bars = [
  ...bar("1", one, raw1, 1.05, /pglock/),
  ...(typeof bunRows === "string" ? [] : bar("1", bunRows, bunRows[0]?.[1] as Summary, 1.05, /pglock/)),
  ...bar("2", two, raw2, 1.15, /pglock/),
];
// ---------- correctness on the measured code ----------
/** Terminal colour codes (ESC [ … m), which vitest writes even into a pipe. */
const ANSI_COLOR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");
// Issue #15: no correctness trade. The contract suite and a chaos run, on the code just measured.
if (!quick) {
  log("## The same code under the contract suite and the chaos suite");
  log();
  const env = { ...process.env, DATABASE_URL: url };
  for (const [label, command, args] of [
    [
      "contract suite (`vitest run test/contract.test.ts`)",
      "node_modules/.bin/vitest",
      ["run", "test/contract.test.ts"],
    ],
    [
      "chaos suite (`npm run test:chaos`: 40 s of faults, the broken variants it must catch, then 30 s on leases)",
      "npm",
      ["run", "test:chaos"],
    ],
  ] as const) {
    // The chaos suite starts its own server: it restarts and kills it.
    const child = spawnSync(command, [...args], {
      env: label.startsWith("chaos") ? process.env : env,
      encoding: "utf8",
    });
    const output = `${child.stdout}${child.stderr}`;
    const summary =
      /Tests\s+(.*?passed[^\n]*)/.exec(output.replace(ANSI_COLOR, ""))?.[1]?.trim() ??
      /chaos: .*$/m.exec(output)?.[0] ??
      "";
    const violations = /violations: \d+/.exec(output)?.[0];
    log(
      `- ${label}: ${child.status === 0 ? "passed" : `**failed** (exit ${child.status})`}${summary ? `, ${summary}` : ""}${violations ? ` (pglock's own run: ${violations})` : ""}`,
    );
  }
  log();
}

const resultsFile = quick ? "bench/RESULTS.quick.md" : "bench/RESULTS.md";
writeFileSync(resultsFile, reportText());
if (!quick)
  writeFileSync("bench/results.svg", svg(bars, "pglock's median latency as a multiple of raw pg's (lower is better)"));
console.log(`\nwrote ${resultsFile}${quick ? "" : " and bench/results.svg"}`);
await server?.stop();
