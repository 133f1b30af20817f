// Fencing tokens: a holder whose lock was lost (a long GC pause, a cut connection) must not
// overwrite a newer holder's write. The resource keeps the highest token it has seen and refuses
// writes that carry an older one.
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
const table = `example_fenced_${process.pid}`;
await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, value text, fencing_token bigint NOT NULL)`);
await pool.query(`INSERT INTO ${table} VALUES (1, 'initial', 0)`);

/** The guarded write: it lands only if no newer holder has written already. */
async function fencedWrite(value: string, token: bigint): Promise<boolean> {
  const { rowCount } = await pool.query(
    `UPDATE ${table} SET value = $1, fencing_token = $2 WHERE id = 1 AND fencing_token < $2`,
    [value, String(token)],
  );
  return rowCount === 1;
}

const first = await locker.acquire("example-report", { fencing: true });
const firstToken = first.fencingToken as bigint;
await first.release(); // imagine its lock was lost while the process was paused
const second = await locker.acquire("example-report", { fencing: true });
console.log(
  `second holder writes with token ${second.fencingToken}:`,
  await fencedWrite("new", second.fencingToken as bigint),
);
await second.release();
const stale = await fencedWrite("stale", firstToken);
console.log(`the paused first holder writes with token ${firstToken}:`, stale);
if (stale) throw new Error("a stale write landed");
await pool.query(`DROP TABLE ${table}`);
await locker.close();
await pool.end();
