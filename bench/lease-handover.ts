/**
 * Scenario 2's lease rows across processes: 8 processes, each a lease Locker, take turns on one key.
 * No release wakes a waiter in another process (leases do not LISTEN): the next grant comes at a
 * waiter's next poll. The time from the start of a release to the next grant, as in handover.ts.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { freshKey, type Row } from "./harness.js";
import { summarize } from "./stats.js";

const PROCESSES = 8;

export async function leaseHandoverAcrossProcesses(url: string, handovers: number, maxPollMs: number): Promise<Row> {
  const key = String(freshKey());
  const cycles = Math.ceil(handovers / PROCESSES) + 1;
  const children = Array.from({ length: PROCESSES }, () =>
    spawn(process.execPath, ["--import", "tsx", "bench/lease-waiter.ts"], {
      env: { ...process.env, DATABASE_URL: url, KEY: key, CYCLES: String(cycles), MAX_POLL_MS: String(maxPollMs) },
      stdio: ["pipe", "pipe", "inherit"],
    }),
  );
  const events: [bigint, "granted" | "releasing"][] = [];
  const outputs = children.map(
    (child) =>
      new Promise<void>((resolve, reject) => {
        child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`a lease waiter exited ${code}`))));
      }),
  );
  const ready = children.map(
    (child) =>
      new Promise<void>((resolve) => {
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
          if (line === "ready") resolve();
          const [what, t] = line.split(" ");
          if (what === "granted" || what === "releasing") events.push([BigInt(t as string), what]);
        });
      }),
  );
  await Promise.all(ready);
  for (const child of children) child.stdin?.end("go\n");
  await Promise.all(outputs);
  events.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const gaps: number[] = [];
  for (let i = 1; i < events.length; i++) {
    const [t, what] = events[i] as [bigint, string];
    const [before, previous] = events[i - 1] as [bigint, string];
    if (what === "granted" && previous === "releasing") gaps.push(Number(t - before) / 1e6);
  }
  return [
    `pglock lease Locker: 8 processes in \`acquire()\`, \`maxPollMs: ${maxPollMs}\` (polling; no wake-up across processes)`,
    summarize(gaps.slice(PROCESSES)),
  ];
}
