// Drizzle sits on a pg.Pool: give the same pool to pglock.
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const db = drizzle(pool);
const locker = createLocker(pool);

const result = await locker.withLock("drizzle-report", async () => {
  const { rows } = await db.execute(sql`SELECT 42 AS answer`);
  return Number(rows[0]?.answer);
});
console.log(`computed under the lock with Drizzle: ${result}`);
await locker.close();
await pool.end();
if (result !== 42) throw new Error("unexpected result");
