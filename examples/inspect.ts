// Who holds what: the advisory locks on the server, held and awaited.
import pg from "pg";
import { createLocker, inspectLocks } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const holder = createLocker(pool, { applicationName: "example-holder" });
const waiter = createLocker(pool, { applicationName: "example-waiter" });
const key = "example-inspected-job";

const held = await holder.acquire(key);
const waiting = waiter.acquire(key, { timeout: 5_000 });
// until the waiter's wait has reached the server (at most 5 s)
for (let waited = 0; (await inspectLocks(pool, { key })).length < 2 && waited < 5_000; waited += 20) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

const locks = await inspectLocks(pool, { key });
for (const lock of locks) {
  console.log(
    `${lock.key}  ${lock.mode}  ${lock.granted ? "held" : "waiting"}  pid ${lock.pid}  ${lock.applicationName}`,
  );
}
if (locks.length !== 2 || !locks[0]?.granted || locks[1]?.granted)
  throw new Error("expected one holder and one waiter");
await held.release();
await (await waiting).release();
await Promise.all([holder.close(), waiter.close()]);
await pool.end();
