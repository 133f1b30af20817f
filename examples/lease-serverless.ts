// Leases where no session stays yours: each statement may run on a different connection (a
// transaction pooler, an HTTP driver). Here a query function over a pool stands in for such a driver.
import pg from "pg";
import { createLeaseLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const query = async (text: string, params: unknown[]) => (await pool.query(text, params)).rows;

// Two function instances; the lease lasts 3 s on the server's clock and is renewed every second.
const [first, second] = [createLeaseLocker(query, { ttlMs: 3_000 }), createLeaseLocker(query, { ttlMs: 3_000 })];

const lease = await first.acquire("invoice-run");
console.log(`first holds the lease, fencing token ${lease.fencingToken}`);
console.log(`second tries: ${(await second.tryAcquire("invoice-run")) === null ? "busy" : "granted?!"}`);
await new Promise((resolve) => setTimeout(resolve, 4_000)); // longer than the TTL: renewal keeps it
if (lease.signal.aborted) throw new Error("a renewed lease must stay held");
console.log("4 s later, renewed in the background, first still holds it");
await lease.release();

const next = await second.acquire("invoice-run", { timeout: 5_000 });
console.log(`second holds it now, token ${next.fencingToken} (higher: a late write of first's is refused)`);
if (!(next.fencingToken > lease.fencingToken)) throw new Error("tokens must increase");
await next.release();
await Promise.all([first.close(), second.close()]);
await pool.end();
