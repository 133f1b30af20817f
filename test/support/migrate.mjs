// A migration as node-pg-migrate or knex would run one, for `pglock run migrations -- node migrate.mjs`
// (issue #23): if the index is not there yet, build it with CREATE INDEX CONCURRENTLY, which waits
// for every transaction with an older snapshot, including those of the instances waiting for the lock.
import pg from "pg";

const [table] = process.argv.slice(2);
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
const { rows } = await client.query("SELECT to_regclass($1) AS found", [`${table}_v`]);
if (rows[0].found === null) {
  await client.query(`CREATE INDEX CONCURRENTLY ${table}_v ON ${table} (v)`);
  process.stdout.write("migrated\n");
} else {
  process.stdout.write("up to date\n");
}
await client.end();
