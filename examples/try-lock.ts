// Try lock: skip the work when another process is already doing it.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));

async function processDataIfAvailable(): Promise<boolean> {
  await using lock = await newLock(pool, 200);
  if (!(await lock.lock())) {
    console.log("Another process is already processing data, skipping...");
    return false;
  }
  try {
    console.log("Processing data...");
    return true;
  } finally {
    await lock.unlock();
  }
}

// While a first worker holds the lock, a second one skips.
const first = await newLock(pool, 200);
await first.lock();
const processed = await processDataIfAvailable();
await first.close();
const processedLater = await processDataIfAvailable();
if (processed || !processedLater) throw new Error("try-lock did not skip, then run, as expected");
await pool.end();
