// Scenario 1's pg rows under Bun (bench/run.ts starts this with the bun of devDependencies and
// reads the JSON it prints): raw `pg`, a `Lock` and a Locker, interleaved as on Node.
import pg from "pg";
import { interleaved, quick, ROUNDS } from "./harness.js";
import { pgContenders } from "./uncontended.js";

const url = process.env.DATABASE_URL as string;
const pool = new pg.Pool({ connectionString: url, max: 4 });
const key = "77007700";
const iterations = quick ? 50 : 3000;
const rows = await interleaved(pgContenders(pool, key, " on Bun"), Math.ceil(iterations / ROUNDS));
await pool.end();
process.stdout.write(`BUN_ROWS ${JSON.stringify(rows)}\n`);
