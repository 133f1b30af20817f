// One process of the lease fairness test (test/lease.test.ts): `workers` tasks each take the key
// `rounds` times, hold it `holdMs`, and report how long each wait took (JSON on stdout).
import pg from "pg";
import { createLeaseLocker } from "pglock";

const [name, workers, rounds, holdMs, maxPollMs] = process.argv
  .slice(2)
  .map((arg, i) => (i === 0 ? arg : Number(arg))) as [string, number, number, number, number];
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: workers + 2 });
pool.on("error", () => {});
const locker = createLeaseLocker(pool, { ttlMs: 10_000, maxPollMs });
const waits: number[] = [];
await Promise.all(
  Array.from({ length: workers }, async () => {
    for (let round = 0; round < rounds; round++) {
      const asked = performance.now();
      const held = await locker.acquire(name, { timeout: 120_000 });
      waits.push(performance.now() - asked);
      await new Promise((resolve) => setTimeout(resolve, holdMs));
      await held.release();
    }
  }),
);
console.log(JSON.stringify({ waits }));
await locker.close();
await pool.end();
