// Events on node:diagnostics_channel: what a lock waited, with no subscriber costing nothing.
import { subscribe } from "node:diagnostics_channel";
import pg from "pg";
import { type AcquiredEvent, channels, createLocker } from "pglock";

const seen: string[] = [];
subscribe(channels.acquired, (message) => {
  const { key, waitMs } = message as AcquiredEvent;
  console.log(`lock ${key} granted after ${waitMs.toFixed(1)} ms`);
  seen.push(String(key));
});

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
await locker.withLock("diagnostics-example", () => {});
await locker.close();
await pool.end();
if (seen.length !== 1) throw new Error(`expected one acquired event, got ${seen.length}`);
