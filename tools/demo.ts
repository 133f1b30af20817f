/**
 * `npm run demo`: the README's "concurrent workers" scenario against DATABASE_URL, or against a
 * throwaway PostgreSQL started for the demo and removed after it.
 */
import { spawnSync } from "node:child_process";
import { startThrowawayPostgres } from "./throwaway-postgres.js";

const given = process.env.DATABASE_URL;
let server: Awaited<ReturnType<typeof startThrowawayPostgres>> | undefined;
if (!given) {
  console.log("DATABASE_URL is not set: starting a throwaway PostgreSQL for this demo...");
  server = await startThrowawayPostgres();
}
console.log("5 workers, each with its own Lock on key 500, each holding it 300 ms:\n");
const result = spawnSync(process.execPath, ["--import", "tsx", "examples/concurrent-workers.ts"], {
  stdio: "inherit",
  env: { ...process.env, DATABASE_URL: given ?? server?.url },
});
await server?.stop();
process.exit(result.status ?? 1);
