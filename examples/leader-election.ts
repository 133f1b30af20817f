// Leader election: whoever holds the lock leads; the others stand by and take over when it goes.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const leaders: string[] = [];

async function runElection(name: string, term: AbortSignal) {
  await using lock = await newLock(pool, "cluster:billing");
  await lock.waitAndLock({ signal: term }); // a server-side wait: takeover is immediate
  console.log(`${name}: became leader`);
  leaders.push(name);
  await new Promise((resolve) => setTimeout(resolve, 150)); // leader duties
  console.log(`${name}: stepping down`);
  await lock.unlock();
}

await Promise.all(["node-a", "node-b", "node-c"].map((name) => runElection(name, AbortSignal.timeout(5_000))));
if (new Set(leaders).size !== 3) throw new Error("every node should have led once, one after another");
await pool.end();
