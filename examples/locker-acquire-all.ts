// Transfer between two accounts: lock both, in one canonical order, so that a transfer A→B and a
// transfer B→A at the same time cannot deadlock each other.
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
const ACCOUNTS = 1; // pair keys: (what kind of thing, which one)

async function transfer(from: number, to: number) {
  await using _accounts = await locker.acquireAll(
    [
      [ACCOUNTS, from],
      [ACCOUNTS, to],
    ],
    { timeout: 5_000 },
  );
  console.log(`transfer ${from} -> ${to} holds both accounts`);
  await new Promise((resolve) => setTimeout(resolve, 20));
}

await Promise.all([transfer(1, 2), transfer(2, 1), transfer(1, 2), transfer(2, 1)]);
console.log("all transfers done, no deadlock");
await locker.close();
await pool.end();
