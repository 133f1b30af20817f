/**
 * One process of the cross-process lease hand-over (lease-handover.ts): takes the lease on KEY,
 * holds it ~1 ms, releases it, CYCLES times; prints "granted <t>" and "releasing <t>" lines on the
 * machine's one monotonic clock (process.hrtime.bigint()), which the parent puts in order.
 */
import pg from "pg";
import { createLeaseLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const locker = createLeaseLocker(pool, { maxPollMs: Number(process.env.MAX_POLL_MS) });
const key = BigInt(process.env.KEY as string);
const lines: string[] = [];
process.stdout.write("ready\n");
await new Promise((resolve) => process.stdin.once("data", resolve));
for (let i = 0; i < Number(process.env.CYCLES); i++) {
  const lease = await locker.acquire(key);
  lines.push(`granted ${process.hrtime.bigint()}`);
  await new Promise((resolve) => setTimeout(resolve, 1));
  lines.push(`releasing ${process.hrtime.bigint()}`);
  await lease.release();
}
process.stdout.write(`${lines.join("\n")}\ndone\n`);
await locker.close();
await pool.end();
