// Leaders others can see: a dashboard that never campaigns observes who leads; the leader publishes
// its address, fences its writes with the term's token, and hands over with resign().
import pg from "pg";
import { createLocker } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const nodes = ["node-a", "node-b"].map((name) => ({
  name,
  locker: createLocker(pool),
}));
const elections = nodes.map(({ name, locker }) => locker.leaderElection("example-scheduler", { owner: name }));

// The dashboard: not a candidate, it only watches.
const dashboard = createLocker(pool);
const watching = new AbortController();
const seen: string[] = [];
const watched = (async () => {
  for await (const leadership of dashboard.leaderElection("example-scheduler").observe({ signal: watching.signal })) {
    seen.push(leadership ? leadership.owner : "nobody");
    console.log(
      leadership
        ? `${leadership.owner} leads, term ${leadership.term}, at ${JSON.stringify(leadership.payload)}`
        : "nobody leads",
    );
  }
})();

const stop = new AbortController();
const runs = elections.map((election, i) =>
  election.run(
    async (signal, term) => {
      // Pass term.token with writes a resource can refuse from an older term.
      console.log(`${nodes[i]?.name} leads with token ${term.token}`);
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
    },
    { signal: stop.signal, payload: { url: `http://${nodes[i]?.name}:8080` } },
  ),
);

const until = async (test: () => boolean) => {
  while (!test()) await new Promise((resolve) => setTimeout(resolve, 20));
};
await until(() => seen.length > 0 && seen.at(-1) !== "nobody");
const first = seen.at(-1);
await elections.find((election) => election.isLeader)?.resign(); // the other node takes over at once
await until(() => seen.at(-1) !== first && seen.at(-1) !== "nobody");

stop.abort();
await Promise.all(runs);
await until(() => seen.at(-1) === "nobody");
watching.abort();
await watched;
await Promise.all([...nodes.map(({ locker }) => locker.close()), dashboard.close()]);
await pool.end();
