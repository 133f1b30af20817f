// Wait and lock: the task must run eventually, even if it has to wait its turn.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));

const holder = await newLock(pool, 300);
await holder.lock();
setTimeout(() => void holder.unlock(), 200); // the other process finishes a little later

await using lock = await newLock(pool, 300);
console.log("Waiting for lock...");
const started = Date.now();
await lock.waitAndLock();
console.log(`Lock acquired after ${Date.now() - started} ms, processing data...`);
await lock.unlock();
await lock.close();
await holder.close();
await pool.end();
