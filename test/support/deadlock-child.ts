// One party of a deadlock test (issue #16): takes its first key, says "holding", and on "go" (a line
// on stdin) waits for its second key with no timeout. Says "granted <ms>" or "failed <code> <ms>",
// then releases everything and exits. `kind` is "locker" (one Locker) or "lock" (two seed Locks).
import { createInterface } from "node:readline";
import pg from "pg";
import { createLocker, newLock } from "pglock";

const [kind, first, second] = process.argv.slice(2) as [string, string, string];
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
const lines = createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.once("line", () => resolve()));
const say = (text: string) => process.stdout.write(`${text}\n`);

async function outcome(wait: () => Promise<unknown>): Promise<void> {
  await go;
  const started = performance.now();
  const ms = () => Math.round(performance.now() - started);
  try {
    await wait();
    say(`granted ${ms()}`);
  } catch (error) {
    say(`failed ${(error as { code?: string }).code ?? (error as Error).message} ${ms()}`);
  }
}

if (kind === "locker") {
  const locker = createLocker(pool);
  const held = await locker.acquire(first);
  say("holding");
  await outcome(async () => (await locker.acquire(second)).release());
  await held.release();
  await locker.close();
} else {
  const holding = await newLock(pool, first);
  if (!(await holding.lock())) throw new Error(`${first} was not free`);
  say("holding");
  const waiting = await newLock(pool, second);
  await outcome(() => waiting.waitAndLock());
  await waiting.close();
  await holding.close();
}
lines.close();
await pool.end();
