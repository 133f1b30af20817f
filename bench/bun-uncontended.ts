// Scenario 1's pg rows under Bun (bench/run.ts starts this with the bun of devDependencies and
// reads the JSON it prints): raw `pg`, a `Lock` and a Locker, interleaved as on Node.
import pg from "pg";
import { createLocker, newLock } from "pglock";
import { interleaved, quick, ROUNDS, sequential } from "./harness.js";

const url = process.env.DATABASE_URL as string;
const pool = new pg.Pool({ connectionString: url, max: 4 });
const key = "77007700";
const iterations = quick ? 50 : 3000;
const rows = await interleaved(
  [
    sequential("raw `pg` on Bun (baseline)", async () => {
      const client = await pool.connect();
      return {
        op: async () => {
          await client.query("SELECT pg_try_advisory_lock($1)", [key]);
          await client.query("SELECT pg_advisory_unlock($1)", [key]);
        },
        teardown: async () => client.release(),
      };
    }),
    sequential("pglock `Lock` on Bun: `lock()` + `unlock()`", async () => {
      const lock = await newLock(pool, BigInt(key));
      return {
        op: async () => {
          await lock.lock();
          await lock.unlock();
        },
        teardown: () => lock.close(),
      };
    }),
    sequential("pglock Locker on Bun: `tryAcquire()` + `release()`", async () => {
      const locker = createLocker(pool);
      return { op: async () => (await locker.tryAcquire(key))?.release(), teardown: () => locker.close() };
    }),
  ],
  Math.ceil(iterations / ROUNDS),
);
await pool.end();
process.stdout.write(`BUN_ROWS ${JSON.stringify(rows)}\n`);
