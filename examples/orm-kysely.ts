// Kysely sits on a pg.Pool: give the same pool to pglock.
import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const db = new Kysely<Record<string, never>>({ dialect: new PostgresDialect({ pool }) });
const locker = createLocker(pool);

const result = await locker.withLock("kysely-report", async () => {
  const { rows } = await sql<{ answer: number }>`SELECT 42 AS answer`.execute(db);
  return rows[0]?.answer;
});
console.log(`computed under the lock with Kysely: ${result}`);
await locker.close();
await db.destroy(); // ends the pool
if (result !== 42) throw new Error("unexpected result");
