// Lock with a timeout: give up waiting after a while. The wait is cancelled on the server too.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));

const holder = await newLock(pool, 400);
await holder.lock(); // someone holds the lock for longer than we will wait

await using lock = await newLock(pool, 400);
try {
  await lock.waitAndLock({ signal: AbortSignal.timeout(300) });
  throw new Error("the lock should not have been acquired");
} catch (error) {
  if ((error as Error).name !== "TimeoutError") throw error;
  console.log("could not acquire lock within 300 ms");
}
await lock.close();
await holder.close();
await pool.end();
