// One process of the election test (test/election.test.ts): campaigns and observes, or only observes.
// argv: <session|lease> <election name> <termMs> <id> <campaign|observe>. Prints JSON lines with
// Date.now() times (one clock for every process of the machine); reads "resign" on stdin.
import { createInterface } from "node:readline";
import pg from "pg";
import { createLeaseLocker, createLocker } from "pglock";

const [kind, name, termMs, id, role] = process.argv.slice(2) as [string, string, string, string, string];
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on("error", () => {});
const locker = kind === "lease" ? createLeaseLocker(pool, { ttlMs: 3_000 }) : createLocker(pool);
const election = locker.leaderElection(name, { termMs: Number(termMs), owner: id });
const say = (event: Record<string, unknown>) => console.log(JSON.stringify({ ...event, id, t: Date.now() }));

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "resign") {
    say({ e: "resigning" });
    void election.resign();
  }
});

void (async () => {
  for await (const leadership of election.observe()) {
    say({ e: "saw", owner: leadership?.owner ?? null, term: leadership ? String(leadership.term) : null });
  }
})();

if (role === "campaign") {
  election.on("demoted", (reason) => say({ e: "demoted", lost: reason !== undefined }));
  await election.run(
    async (signal, term) => {
      say({ e: "elected", term: String(term.token), payload: term.payload });
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
    },
    { payload: { address: `${id}.internal:8080` } },
  );
}
