// Scheduled jobs run once per tick across replicas (issue #25): three processes, each with croner
// firing every 2 s, their clocks 0, 150 and 300 ms apart, for 60 s. A 20 ms job runs once per tick,
// never twice; a 3 s job (longer than a tick, bounded by atMostMs) never overlaps itself.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { databaseUrl, uniqueName } from "./support/db.js";
import { program } from "./support/run.js";

const TICK_MS = 2_000;
const WINDOW_MS = 60_000;

interface Run {
  replica: number;
  tick: number;
  start: number;
  end: number;
}

interface Replica {
  child: ChildProcess;
  ready: Promise<void>;
  runs: Promise<Run[]>;
}

/** Three replicas on `key`; each says "ready", then runs on the ticks of the window it is sent. */
function replicas(key: string, jobMs: number, runLength: Record<string, number>): Replica[] {
  const [command, args] = program("test/support/cron-replica.ts");
  return [0, 150, 300].map((offset, replica) => {
    const env: Record<string, string> = {
      ...process.env,
      DATABASE_URL: databaseUrl(),
      KEY: key,
      OFFSET_MS: String(offset),
      JOB_MS: String(jobMs),
      AT_LEAST_MS: String(runLength.atLeastMs ?? 0),
      ...(runLength.atMostMs ? { AT_MOST_MS: String(runLength.atMostMs) } : {}),
    };
    const child = spawn(command, [...args, "test/support/cron-replica.ts"], {
      env,
      stdio: ["pipe", "pipe", "inherit"],
    });
    const lines: string[] = [];
    let isReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      isReady = resolve;
    });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      if (line === "ready") isReady();
      lines.push(line);
    });
    const runs = new Promise<Run[]>((resolve, reject) => {
      child.on("error", reject);
      child.on("exit", (code) => {
        if (code !== 0) return reject(new Error(`replica ${replica} exited ${code}: ${lines.join("\n")}`));
        resolve(lines.filter((line) => line.startsWith("{")).map((line) => ({ replica, ...JSON.parse(line) })));
      });
    });
    return { child, ready, runs };
  });
}

describe("a scheduled job on three replicas", () => {
  it("runs once per tick: a 20 ms job 30 times in 60 s, and a 3 s job with atMostMs never overlaps itself", async () => {
    // Both scenarios at once, on keys of their own, over the same minute of ticks (even seconds),
    // which begins once every replica has started (a process start can take seconds under load).
    const short = replicas(uniqueName("cron-short"), 20, { atLeastMs: 1_000 });
    const long = replicas(uniqueName("cron-long"), 3_000, { atLeastMs: 1_000, atMostMs: 5_000 });
    const all = [...short, ...long];
    await Promise.all(all.map((replica) => replica.ready));
    const from = Math.ceil((Date.now() + 1_000) / TICK_MS) * TICK_MS;
    for (const { child } of all) child.stdin?.end(`${from} ${from + WINDOW_MS}\n`);
    const [shortRuns, longRuns] = (await Promise.all(
      [short, long].map(async (group) =>
        (await Promise.all(group.map((replica) => replica.runs))).flat().sort((a, b) => a.start - b.start),
      ),
    )) as [Run[], Run[]];

    const ticks = (runs: Run[]) => runs.map((run) => run.tick);
    // Never twice in one tick, and a run for (about) every one of the 30 ticks.
    expect(new Set(ticks(shortRuns)).size).toBe(shortRuns.length);
    expect(shortRuns.length).toBeGreaterThanOrEqual(29);
    expect(shortRuns.length).toBeLessThanOrEqual(30);

    expect(new Set(ticks(longRuns)).size).toBe(longRuns.length);
    for (let i = 1; i < longRuns.length; i++) {
      const [previous, run] = [longRuns[i - 1] as Run, longRuns[i] as Run];
      expect(run.start, "a run began before the previous one ended").toBeGreaterThanOrEqual(previous.end);
    }
    // A 3 s job on 2 s ticks: every other tick (the one in between finds the key held).
    expect(longRuns.length).toBeGreaterThanOrEqual(14);
    expect(longRuns.length).toBeLessThanOrEqual(16);
  }, 120_000);
});
