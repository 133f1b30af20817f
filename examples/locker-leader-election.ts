// Leader election with the Locker: three nodes; when the leader steps down, a follower takes over
// at once (it was waiting on the server), and each leader's duties get a signal that aborts on loss.
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const led: string[] = [];

async function node(name: string) {
  const locker = createLocker(pool);
  const election = locker.leaderElection("example-billing-scheduler");
  election.on("elected", () => console.log(`${name}: elected`));
  election.on("demoted", () => console.log(`${name}: stepped down`));
  const term = new AbortController();
  await election.run(
    async (signal) => {
      led.push(name);
      // leader duties: a few ticks, then step down (a real service would run until `signal` aborts)
      for (let tick = 0; tick < 3 && !signal.aborted; tick++) await new Promise((r) => setTimeout(r, 30));
    },
    { signal: term.signal },
  );
  await locker.close();
}

await Promise.all(["node-a", "node-b", "node-c"].map(node));
if (new Set(led).size !== 3) throw new Error("each node should have led once");
await pool.end();
