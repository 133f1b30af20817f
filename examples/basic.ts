// Basic lock usage: take a lock without waiting, do the work, release it.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));

await using lock = await newLock(pool, 100);
if (await lock.lock()) {
  console.log("Lock acquired! Doing work...");
  await lock.unlock();
  console.log("Lock released!");
} else {
  console.log("Could not acquire lock - another process has it");
}
await lock.close();
await pool.end();
