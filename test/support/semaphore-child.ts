// One process of the semaphore tests (test/semaphore.test.ts).
// argv: weighted <session|lease> <name> <permits> <counter table> <rounds>: takes a random number of
//   permits per round and adds them to a shared counter while held; prints the largest total it saw.
// argv: waiter <session|lease> <name>: on each "go" line, waits for one permit and prints when granted.
import { createInterface } from "node:readline";
import pg from "pg";
import { createLeaseLocker, createLocker } from "pglock";

const [mode, kind, name] = process.argv.slice(2) as [string, string, string];
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 6 });
pool.on("error", () => {});
const locker = kind === "lease" ? createLeaseLocker(pool, { ttlMs: 5_000 }) : createLocker(pool);

if (mode === "weighted") {
  const [permits, table, rounds] = [Number(process.argv[5]), process.argv[6] as string, Number(process.argv[7])];
  const semaphore = locker.semaphore(name, permits);
  let most = 0;
  let largest = 0;
  for (let round = 0; round < rounds; round++) {
    const wanted = 1 + Math.floor(Math.random() * permits);
    largest = Math.max(largest, wanted);
    const held = await semaphore.acquire({ permits: wanted, timeout: 60_000 });
    const { rows } = await pool.query<{ used: number }>(`UPDATE ${table} SET used = used + $1 RETURNING used`, [
      wanted,
    ]);
    most = Math.max(most, rows[0]?.used ?? 0);
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 15));
    await pool.query(`UPDATE ${table} SET used = used - $1`, [wanted]);
    await held.release();
  }
  console.log(JSON.stringify({ most, largest }));
  await locker.close();
  await pool.end();
} else {
  const semaphore = locker.semaphore(name, 1);
  createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line === "exit") {
      await locker.close();
      await pool.end();
      return;
    }
    const held = await semaphore.acquire({ timeout: 30_000 });
    console.log(JSON.stringify({ granted: Date.now() }));
    await held.release();
  });
  console.log(JSON.stringify({ ready: true }));
}
