// Scheduled jobs run once per tick across replicas (issue #25): three processes, each with croner
// firing every 2 s, their clocks 0, 150 and 300 ms apart, for 60 s. A 20 ms job runs once per tick,
// never twice; a 3 s job (longer than a tick, bounded by atMostMs) never overlaps itself.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { databaseUrl, uniqueName } from "./support/db.js";
import { program } from "./support/run.js";

const TICK_MS = 2_000;
const WINDOW_MS = 60_000;

interface Run {
  replica: number;
  start: number;
  end: number;
}

/** Three replicas on `key` over the same window of wall-clock time; every run they made. */
async function replicas(key: string, jobMs: number, runLength: Record<string, number>, from: number): Promise<Run[]> {
  const [command, args] = program("test/support/cron-replica.ts");
  const children = [0, 150, 300].map((offset, replica) => {
    const env: Record<string, string> = {
      ...process.env,
      DATABASE_URL: databaseUrl(),
      KEY: key,
      OFFSET_MS: String(offset),
      JOB_MS: String(jobMs),
      FROM: String(from),
      UNTIL: String(from + WINDOW_MS),
      AT_LEAST_MS: String(runLength.atLeastMs ?? 0),
      ...(runLength.atMostMs ? { AT_MOST_MS: String(runLength.atMostMs) } : {}),
    };
    const child = spawn(command, [...args, "test/support/cron-replica.ts"], {
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines: string[] = [];
    createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
    return new Promise<Run[]>((resolve, reject) => {
      child.on("error", reject);
      child.on("exit", (code) => {
        if (code !== 0) return reject(new Error(`replica ${replica} exited ${code}: ${lines.join("\n")}`));
        resolve(lines.filter((line) => line.startsWith("{")).map((line) => ({ replica, ...JSON.parse(line) })));
      });
    });
  });
  return (await Promise.all(children)).flat().sort((a, b) => a.start - b.start);
}

describe("a scheduled job on three replicas", () => {
  it("runs once per tick: a 20 ms job 30 times in 60 s, and a 3 s job with atMostMs never overlaps itself", async () => {
    // Both scenarios at once, on keys of their own, over the same minute; ticks on even seconds.
    const from = Math.ceil((Date.now() + 3_000) / TICK_MS) * TICK_MS;
    const [short, long] = await Promise.all([
      replicas(uniqueName("cron-short"), 20, { atLeastMs: 1_000 }, from),
      replicas(uniqueName("cron-long"), 3_000, { atLeastMs: 1_000, atMostMs: 5_000 }, from),
    ]);

    const ticksOf = (runs: Run[]) => runs.map((run) => Math.floor(run.start / TICK_MS));
    // Never twice in one tick, and one run for (about) every tick of the minute.
    expect(new Set(ticksOf(short)).size).toBe(short.length);
    expect(short.length).toBeGreaterThanOrEqual(29);
    expect(short.length).toBeLessThanOrEqual(31);

    expect(new Set(ticksOf(long)).size).toBe(long.length);
    for (let i = 1; i < long.length; i++) {
      expect(long[i]?.start, "a run began before the previous one ended").toBeGreaterThanOrEqual(long[i - 1]?.end ?? 0);
    }
    // A 3 s job on 2 s ticks: every other tick (the one in between finds the key held).
    expect(long.length).toBeGreaterThanOrEqual(14);
    expect(long.length).toBeLessThanOrEqual(16);
  }, 120_000);
});
