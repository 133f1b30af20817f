// Knex keeps its own pool of pg clients, not a pg.Pool. Two ways:
// - a Lock on one of Knex's connections (a connected pg.Client), given back to Knex after;
// - a transaction-level lock inside a Knex transaction, through its connection.
import knexFactory from "knex";
import { newLock, withXactLock } from "pglock";

const knex = knexFactory({ client: "pg", connection: process.env.DATABASE_URL, pool: { min: 0, max: 2 } });

const connection = await knex.client.acquireConnection();
try {
  await using lock = await newLock(connection, "knex-report");
  console.log(`Lock on a Knex connection: ${await lock.lock()}`);
} finally {
  await knex.client.releaseConnection(connection);
}

await knex.transaction(async (trx) => {
  const client = await trx.client.acquireConnection(); // the transaction's own connection
  await withXactLock(client, "knex-orders", async () => {
    const { rows } = await trx.raw("SELECT 1 AS one");
    console.log(`inside the transaction, under the lock: ${rows[0].one}`);
  });
});
await knex.destroy();
