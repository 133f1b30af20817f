// postgres.js: give pglock the sql instance you already have. Each pglock session is a connection
// of its own, opened with that instance's settings; your instance's connections stay yours.

import { createLocker, newLock, withXactLock } from "pglock";
import postgres from "postgres";

const sql = postgres(process.env.DATABASE_URL ?? "postgres://localhost/postgres", { onnotice: () => {} });
const locker = createLocker(sql);

const total = await locker.withLock("invoice:7", async () => {
  const [row] = await sql`SELECT 40 + 2 AS total`;
  return row?.total as number;
});
console.log(`computed under the lock with postgres.js: ${total}`);

await using lock = await newLock(sql, "postgres-js-example");
const first = await lock.lock();
const second = await locker.tryAcquire("postgres-js-example"); // another session: refused
console.log(`Lock took it: ${first}; the Locker, meanwhile: ${second === null ? "refused" : "granted"}`);
await lock.close();

// A transaction-level lock inside sql.begin: released at COMMIT (works through PgBouncer's transaction pooling).
const settled = await sql.begin(async (tx) =>
  withXactLock(tx, "invoice:7", async () => (await tx`SELECT 'settled' AS state`)[0]?.state, { timeout: 5_000 }),
);
console.log(`in a transaction: ${settled}`);

await locker.close();
await sql.end();
if (total !== 42 || !first || second !== null || settled !== "settled") throw new Error("unexpected result");
