// Semaphore: at most 3 concurrent uploads across every process that uses the name "uploads".
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
const uploads = locker.semaphore("example-uploads", 3);
let running = 0;
let most = 0;

await Promise.all(
  Array.from({ length: 8 }, async (_, i) => {
    await using slot = await uploads.acquire({ timeout: 10_000 });
    running++;
    most = Math.max(most, running);
    console.log(`upload ${i} uses slot ${slot.slot} (${running} running)`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    running--;
  }),
);
if (most > 3) throw new Error(`${most} uploads ran at once`);

// A large upload takes two permits at once; it waits its turn, and is not overtaken forever by small ones.
const large = await uploads.acquire({ permits: 2, timeout: 10_000 });
console.log(`large upload uses slots ${large.slots.join(", ")}; ${await uploads.available()} permit(s) free`);
await large.release();
await locker.close();
await pool.end();
