// The README's first example: a job that runs once across replicas, and work serialized per customer.
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`)); // or a restart crashes the process
const locker = createLocker(pool); // a few connections, however many locks

// Every replica's cron calls this; the report runs on one of them per hour.
const report = await locker.tryWithLock("hourly-report", async () => "report sent", { atLeastMs: 30 * 60_000 });
console.log(report.acquired ? report.value : "another replica sent it");

// One payment at a time per customer; `signal` aborts if the lock is lost meanwhile.
const customerId = 42;
await locker.withLock(`customer:${customerId}`, async (signal) => signal.throwIfAborted(), { timeout: 5_000 });

await locker.close();
await pool.end();
