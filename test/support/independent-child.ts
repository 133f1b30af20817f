// Independent tasks of one process (issue #23): on "go" (a line on stdin), task 1 holds its own key
// for HOLD_MS (3 s) and task 2, 0.5 s later, waits for another process's key while holding nothing.
// No task holds one lock while it waits for another, so there is no deadlock, whatever the other
// processes do. Says "granted <ms>" or "failed <code> <ms>" for task 2's wait, then exits.
// `kind` is "locker" (both tasks on one Locker, default options) or "lock" (seed Locks).
import pg from "pg";
import { createLocker, newLock } from "pglock";
import { goSignal, report, say } from "./child-io.js";

const [kind, own, other] = process.argv.slice(2) as [string, string, string];
const holdMs = Number(process.env.HOLD_MS ?? 3_000);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 6 });
pool.on("error", () => {});
const lines = goSignal();
const go = lines.go;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

if (kind === "locker") {
  const locker = createLocker(pool);
  say("ready");
  await go;
  await Promise.all([
    locker.withLock(own, () => sleep(holdMs)),
    sleep(500).then(() => report(() => locker.withLock(other, () => {}))),
  ]);
  await locker.close();
} else {
  const [first, second] = await Promise.all([newLock(pool, own), newLock(pool, other)]);
  say("ready");
  await go;
  await Promise.all([
    (async () => {
      await first.waitAndLock();
      await sleep(holdMs);
      await first.unlock();
    })(),
    sleep(500).then(() =>
      report(async () => {
        await second.waitAndLock();
        await second.unlock();
      }),
    ),
  ]);
  await Promise.all([first.close(), second.close()]);
}
lines.close();
await pool.end();
