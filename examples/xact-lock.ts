// Transaction-level lock: serialize "check then insert" for one customer inside a transaction.
// PostgreSQL releases the lock at COMMIT or ROLLBACK, so this works through PgBouncer in
// transaction pooling too.
import pg from "pg";
import { withXactLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const table = `example_orders_${process.pid}`;
const ORDERS = 2; // pair keys: (what kind of thing, which one)
await pool.query(`CREATE TABLE ${table} (customer int, n int)`);

async function placeFirstOrder(customer: number) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await withXactLock(
      client,
      [ORDERS, customer],
      async () => {
        const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${table} WHERE customer = $1`, [customer]);
        if (rows[0].n === 0) await client.query(`INSERT INTO ${table} VALUES ($1, 1)`, [customer]);
      },
      { timeout: 5_000 },
    );
    await client.query("COMMIT"); // releases the lock
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  } finally {
    client.release();
  }
}

await Promise.all(Array.from({ length: 5 }, () => placeFirstOrder(7)));
const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table}`);
console.log(`orders for customer 7: ${rows[0].n}`);
await pool.query(`DROP TABLE ${table}`);
await pool.end();
if (rows[0].n !== 1) throw new Error("exactly one first order expected");
