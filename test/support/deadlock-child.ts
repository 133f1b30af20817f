// One party of a deadlock test (issue #16, #23): takes its first key, says "holding", and on "go" (a
// line on stdin) waits for its second key while holding the first. Says "granted <ms>" or
// "failed <code> <ms>", then releases everything and exits. `kind` says how the task holds and waits:
// - "locker": nested withLock calls on one Locker (the task context says what the task holds);
// - "handles": acquire(second, { holding: [first] }) on one Locker;
// - "handles-unsaid": acquire(second) with no hint: pglock does not know the task holds the first;
// - "lock": two seed Locks, waitAndLock({ holding: [first] });
// - "lock-unsaid": two seed Locks, waitAndLock() with no hint.
// A wait of the unsaid kinds gives up after WAIT_TIMEOUT_MS (default: never).
import { hostname } from "node:os";
import pg from "pg";
import { createLocker, newLock } from "pglock";
import { goSignal, report, say } from "./child-io.js";

const [kind, first, second] = process.argv.slice(2) as [string, string, string];
const timeout = process.env.WAIT_TIMEOUT_MS ? Number(process.env.WAIT_TIMEOUT_MS) : undefined;
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on("error", () => {});
const lines = goSignal();
if (process.env.PRINT_IDENTITY) say(`identity ${process.pid} ${hostname()}`);

async function outcome(wait: () => Promise<unknown>): Promise<void> {
  await lines.go;
  await report(wait);
}

if (kind === "locker") {
  const locker = createLocker(pool);
  await locker.withLock(first, async () => {
    say("holding");
    await outcome(() => locker.withLock(second, () => {}, { timeout }));
  });
  await locker.close();
} else if (kind === "handles" || kind === "handles-unsaid") {
  const locker = createLocker(pool);
  const held = await locker.acquire(first);
  say("holding");
  const holding = kind === "handles" ? [held] : undefined;
  await outcome(async () => (await locker.acquire(second, { holding, timeout })).release());
  await held.release();
  await locker.close();
} else {
  const holding = await newLock(pool, first);
  if (!(await holding.lock())) throw new Error(`${first} was not free`);
  say("holding");
  const waiting = await newLock(pool, second);
  const signal = timeout === undefined ? undefined : AbortSignal.timeout(timeout);
  await outcome(() => waiting.waitAndLock({ holding: kind === "lock" ? [holding] : undefined, signal }));
  await waiting.close();
  await holding.close();
}
lines.close();
await pool.end();
