// The lease fairness scenario (issue #28), shared by test/lease.test.ts and the PgBouncer suite:
// 3 processes × 3 tasks each take one key 8 times and hold it 100 ms (lease-waiter-child.ts).
import { spawn } from "node:child_process";
import { program } from "./run.js";

export interface Turns {
  median: number;
  longest: number;
  /** Each process's mean wait. */
  means: number[];
}

export async function leaseTurns(url: string, name: string): Promise<Turns> {
  const runs = await Promise.all(
    [0, 1, 2].map(
      () =>
        new Promise<number[]>((resolve, reject) => {
          const [command, args] = program("test/support/lease-waiter-child.ts");
          const child = spawn(command, [...args, name, "3", "8", "100", "1000"], {
            env: { ...process.env, DATABASE_URL: url },
            stdio: ["ignore", "pipe", "inherit"],
          });
          let output = "";
          child.stdout?.on("data", (chunk) => {
            output += chunk;
          });
          child.on("exit", (code) =>
            code === 0 ? resolve((JSON.parse(output) as { waits: number[] }).waits) : reject(new Error(`exit ${code}`)),
          );
        }),
    ),
  );
  const all = runs.flat().sort((a, b) => a - b);
  return {
    median: all[Math.floor(all.length / 2)] as number,
    longest: all.at(-1) as number,
    means: runs.map((waits) => waits.reduce((sum, wait) => sum + wait, 0) / waits.length),
  };
}
