// Migration lock: in a deploy of several instances, migrations run once; the others wait, then see
// that the database is up to date.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const table = `pglock_example_migrations_${process.pid}`;

async function runMigrations(instance: number) {
  await using lock = await newLock(pool, 999_999);
  await lock.waitAndLock({ signal: AbortSignal.timeout(30_000) });
  try {
    const { rows } = await pool.query("SELECT to_regclass($1) IS NOT NULL AS done", [table]);
    if (rows[0].done) {
      console.log(`instance ${instance}: database is up to date`);
      return false;
    }
    console.log(`instance ${instance}: running migrations...`);
    await pool.query(`CREATE TABLE ${table} (id int)`);
    return true;
  } finally {
    await lock.unlock();
  }
}

const ran = await Promise.all([1, 2, 3].map(runMigrations));
await pool.query(`DROP TABLE ${table}`);
await pool.end();
if (ran.filter(Boolean).length !== 1) throw new Error("migrations must run exactly once");
