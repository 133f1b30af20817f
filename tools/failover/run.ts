/**
 * `npm run test:failover`: failover drills on a real HA stack (stack.ts: Patroni, etcd, HAProxy, three
 * PostgreSQL nodes). In each drill, chaos workers (tools/chaos/worker.ts) hold a fenced lock and
 * increment a fenced read-modify-write counter through the HA endpoint while the primary fails.
 * Besides, the harness holds a key through a Locker and another through a Lock for the whole drill.
 * Reported per drill: when both holders were told, when another client could take their keys again,
 * whether fencing tokens kept increasing in grant order (a grant on a demoted primary would show as a
 * lower token), and how many acknowledged increments were lost. Fails on a token that does not increase, a lost
 * increment with synchronous replication, an unhandled error or a crashed worker.
 *
 * The lease drills run the workers on the lease Locker (CHAOS_MODE=lease), and the harness holds a
 * lease through the fault. A lease is a row, so it survives a failover that keeps its commit: then
 * its holder keeps it (renewed on the new primary) and nobody else may get it. With asynchronous
 * replication the row can be lost; then another client may get the key before the holder's next
 * renewal tells it (the README says so), and the tokens say which write is newer.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import pg from "pg";
import { createLeaseLocker, createLocker, type LockHandle, newLock } from "pglock";
import { counterViolations } from "../chaos/check.js";
import { type Node, type Stack, startStack } from "./stack.js";

const WORKERS = 4;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => process.hrtime.bigint();
const msSince = (from: bigint, to: bigint) => Number(to - from) / 1e6;

interface Event {
  t: bigint;
  w: number;
  e: string;
  token?: string | null;
  n?: number;
  message?: string;
}

/** Every process under `pid` (Patroni's postmaster and its backends), found through /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {}
  }
  const all: number[] = [];
  const walk = (p: number) => {
    for (const child of children.get(p) ?? []) {
      all.push(child);
      walk(child);
    }
  };
  walk(pid);
  return all;
}

function signal(pids: number[], name: NodeJS.Signals) {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch {}
  }
}

interface Drill {
  name: string;
  synchronous: boolean;
  /** Workers and the harness's holder on leases. */
  leases?: boolean;
  fault(stack: Stack, leader: Node): Promise<void>;
}

const DRILLS: Drill[] = [
  {
    name: "planned switchover",
    synchronous: true,
    async fault(stack, leader) {
      // No --candidate: in synchronous mode only the synchronous standby may take over, and Patroni
      // knows which one that is (naming another one made the switchover fail silently).
      execFileSync("patronictl", ["-c", stack.configOf(leader), "switchover", "--leader", leader.name, "--force"], {
        stdio: "ignore",
      });
    },
  },
  {
    name: "primary postmaster SIGKILL",
    synchronous: true,
    async fault(stack, leader) {
      signal([stack.postmasterPid(leader) ?? 0], "SIGKILL");
    },
  },
  {
    name: "whole primary node frozen 30 s",
    synchronous: true,
    async fault(_stack, leader) {
      const pids = [leader.patroni?.pid ?? 0, ...descendants(leader.patroni?.pid ?? 0)];
      signal(pids, "SIGSTOP");
      await sleep(30_000);
      signal(pids, "SIGCONT");
    },
  },
  {
    name: "Patroni and postmaster killed",
    synchronous: true,
    async fault(stack, leader) {
      signal([leader.patroni?.pid ?? 0, stack.postmasterPid(leader) ?? 0], "SIGKILL");
    },
  },
  {
    name: "unplanned failover, replicas behind (asynchronous)",
    synchronous: false,
    async fault(stack, leader) {
      // The primary's WAL senders are frozen while it goes on committing, then the primary dies: the
      // replicas are behind, and the commits they never received are gone. (Stopping the replicas'
      // WAL receivers was not enough: the WAL in their sockets still arrived, or they came back.)
      const senders = descendants(stack.postmasterPid(leader) ?? 0).filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("walsender");
        } catch {
          return false;
        }
      });
      signal(senders, "SIGSTOP");
      await sleep(3_000);
      signal([stack.postmasterPid(leader) ?? 0, ...senders], "SIGKILL");
    },
  },
];
// The same switchover and asynchronous failover, on leases.
for (const name of ["planned switchover", "unplanned failover, replicas behind (asynchronous)"]) {
  const drill = DRILLS.find((d) => d.name === name) as Drill;
  DRILLS.push({ ...drill, name: `${name}, on leases`, leases: true });
}

async function runDrill(drill: Drill) {
  // A cold start that fails is tried once more: the drill is about pglock, not Patroni's bootstrap.
  const stack = await startStack({ synchronous: drill.synchronous }).catch((error: unknown) => {
    console.log(`the HA stack did not start (${String(error).split("\n")[0]}); trying once more`);
    return startStack({ synchronous: drill.synchronous });
  });
  const violations: string[] = [];
  const events: Event[] = [];
  const workers: ChildProcess[] = [];
  const pools: pg.Pool[] = [];
  const admin = new pg.Pool({ connectionString: stack.url, max: 2 });
  admin.on("error", () => {});
  try {
    await admin.query(`CREATE TABLE chaos_counter (id int PRIMARY KEY, n bigint NOT NULL, token bigint NOT NULL DEFAULT 0);
      INSERT INTO chaos_counter VALUES (1, 0, 0);
      CREATE TABLE chaos_increments (seq bigserial PRIMARY KEY, worker int, n bigint, token bigint);`);
    const idle = new Set<number>();
    for (let id = 0; id < WORKERS; id++) {
      const child = spawn(process.execPath, ["--import", "tsx", "tools/chaos/worker.ts"], {
        env: {
          ...process.env,
          DATABASE_URL: stack.url,
          LOCK_URL: stack.url,
          CHAOS_WORKER: String(id),
          CHAOS_DRIVER: id % 2 === 0 ? "pg" : "postgres.js",
          CHAOS_BROKEN: "",
          CHAOS_MODE: drill.leases ? "lease" : "session",
        },
        stdio: ["pipe", "pipe", "inherit"],
      });
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        try {
          const event = JSON.parse(line) as Event & { t: string };
          events.push({ ...event, t: BigInt(event.t) });
          if (event.e === "idle") idle.add(id);
          if (event.e === "unhandled") violations.push(`worker ${id}: unhandled: ${event.message}`);
        } catch {}
      });
      child.on("exit", (code, sig) => {
        if (code !== 0) violations.push(`worker ${id} exited with ${code ?? sig}`);
      });
      workers.push(child);
    }
    // Holders that hold through the fault: a Locker's handle and a Lock, or a lease.
    const holderPool = new pg.Pool({ connectionString: stack.url, max: 4 });
    holderPool.on("error", () => {});
    pools.push(holderPool);
    const holder = drill.leases ? createLeaseLocker(holderPool) : createLocker(holderPool);
    const held: LockHandle = await holder.acquire("ha-held", { fencing: true });
    const lock = drill.leases ? undefined : await newLock(holderPool, "ha-held-lock");
    if (lock && !(await lock.lock())) throw new Error("the Lock's key is taken");
    const keys = lock ? ["ha-held", "ha-held-lock"] : ["ha-held"];
    const toldAt: bigint[] = [];
    for (const signal of [held.signal, lock?.signal]) {
      signal?.addEventListener("abort", () => toldAt.push(now()), { once: true });
    }
    await sleep(5_000);
    const leader = await stack.leader();
    if (!leader) throw new Error("no leader before the fault");
    const faultAt = now();
    // Another client takes the keys as soon as it can (a lease kept through the fault: never).
    const takerPool = new pg.Pool({ connectionString: stack.url, max: 4 });
    takerPool.on("error", () => {});
    pools.push(takerPool);
    const taker = drill.leases ? createLeaseLocker(takerPool) : createLocker(takerPool);
    let drillOver = false;
    const retaking = (async () => {
      const deadline = Date.now() + 120_000;
      for (const key of keys) {
        for (;;) {
          const handle = await taker.tryAcquire(key).catch(() => null);
          if (handle) {
            await handle.release().catch(() => {});
            break;
          }
          if (Date.now() > deadline || (drill.leases && drillOver)) return undefined;
          await sleep(100);
        }
      }
      return now();
    })();
    await drill.fault(stack, leader);
    // Run on until a new primary serves, then 10 s more.
    const deadline = Date.now() + 90_000;
    while (!(await stack.leader()) || (await stack.leader()) === leader) {
      if (Date.now() > deadline) {
        violations.push("no other node became the primary within 90 s of the fault");
        break;
      }
      await sleep(500);
    }
    await sleep(10_000);
    for (const child of workers) child.kill("SIGTERM");
    const idleBy = Date.now() + 30_000;
    while (idle.size < WORKERS && Date.now() < idleBy) await sleep(100);
    for (const child of workers) child.stdin?.end();
    const exited = (child: (typeof workers)[number]) => child.exitCode !== null || child.signalCode !== null;
    await Promise.all(workers.map((child) => exited(child) || new Promise((resolve) => child.once("exit", resolve))));

    // When the holders were told, and when another client could take their keys again.
    drillOver = true;
    const retakenAt = await retaking;
    const told = toldAt.length === keys.length ? Math.max(...toldAt.map((t) => msSince(faultAt, t))) : undefined;
    let outcome = "";
    if (drill.leases && told === undefined) {
      // Kept through the fault: then nobody else may have had it.
      if (retakenAt !== undefined) violations.push("the lease was granted to another client while its holder kept it");
      outcome = "the lease was kept through the fault; ";
    } else {
      if (told === undefined) violations.push("a holder was never told");
      if (retakenAt === undefined) violations.push("the keys could not be taken again within 120 s");
      const early = told !== undefined && retakenAt !== undefined && msSince(faultAt, retakenAt) < told;
      // An asynchronous failover may lose a lease's row: then an early grant is what leases promise.
      if (early && drill.leases && !drill.synchronous)
        outcome = "the lease's row was lost, and its key granted before the holder was told; ";
      else if (early) violations.push("a key was taken again before its holder was told");
    }
    await Promise.all([holder.close(), taker.close(), lock?.close().catch(() => {})]);
    const sorted = [...events].sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
    // Tokens in grant order must strictly increase.
    let last: bigint | undefined;
    for (const event of sorted.filter((e) => e.e === "granted" && e.token)) {
      const token = BigInt(event.token as string);
      if (last !== undefined && token <= last) violations.push(`token ${token} granted after ${last}`);
      last = token;
    }
    const counter = Number((await admin.query("SELECT n FROM chaos_counter WHERE id = 1")).rows[0].n);
    const increments = (await admin.query("SELECT n::int AS n, token::text AS token FROM chaos_increments")).rows;
    // An acknowledged increment is lost when its row is not there; a row whose acknowledgement was
    // cut off by the fault (committed, not confirmed) is not a loss.
    const recorded = new Set(increments.map((row) => `${row.n}:${row.token}`));
    const writes = events.filter((e) => e.e === "write");
    const acknowledged = writes.length;
    const lostIncrements = writes.filter((e) => !recorded.has(`${e.n}:${e.token}`)).length;
    for (const violation of counterViolations(counter, increments)) violations.push(violation);
    if (drill.synchronous && lostIncrements > 0) violations.push(`${lostIncrements} acknowledged increments lost`);
    return {
      outcome,
      drill: drill.name,
      told: told === undefined ? "never" : `${(told / 1000).toFixed(1)} s`,
      retaken: retakenAt === undefined ? "never" : `${(msSince(faultAt, retakenAt) / 1000).toFixed(1)} s`,
      grants: events.filter((e) => e.e === "granted").length,
      writes: acknowledged,
      lostIncrements,
      violations,
    };
  } finally {
    for (const child of workers) child.kill("SIGKILL");
    await Promise.all([admin, ...pools].map((pool) => pool.end().catch(() => {})));
    await stack.stop();
  }
}

const only = process.argv[2];
const results = [];
for (const drill of DRILLS) {
  if (only && !drill.name.includes(only)) continue;
  const started = Date.now();
  const result = await runDrill(drill);
  results.push(result);
  console.log(
    `${result.drill}: ${result.outcome}holders told after ${result.told}; keys taken again after ${result.retaken}; ` +
      `${result.grants} grants, ${result.writes} increments, ${result.lostIncrements} lost; ` +
      `violations ${result.violations.length} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
  );
  for (const violation of result.violations.slice(0, 5)) console.log(`  - ${violation}`);
}
const failed = results.filter((result) => result.violations.length > 0).length;
console.log(`\nfailover: ${results.length - failed} drills passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
