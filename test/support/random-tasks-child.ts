// Many tasks of one process that never wait for a key while holding a later one (issue #23): each
// round takes one random key, or two in one global order (the inner one inside the outer's withLock,
// or with { holding } on seed Locks). Such a program cannot deadlock, so no wait may fail. The rounds
// come from a seeded generator (SEED), so a failing run can be replayed. Prints one JSON line:
// { waits, longWaits, deadlocks, errors } where a long wait lasted more than DEADLOCK_MS, the
// deadlock check's delay.
import pg from "pg";
import { createLocker, DeadlockError, type Lock, newLock } from "pglock";

const [kind, keyList] = process.argv.slice(2) as [string, string];
const keys = keyList.split(",");
const seed = Number(process.env.SEED ?? 1);
const tasks = Number(process.env.TASKS ?? 6);
const rounds = Number(process.env.ROUNDS ?? 80);
const deadlockMs = Number(process.env.DEADLOCK_MS ?? 20);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: tasks * keys.length + 4 });
pool.on("error", () => {});

/** mulberry32: a small seeded generator. */
function generator(state: number) {
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const counts = { waits: 0, longWaits: 0, deadlocks: 0, errors: 0, messages: [] as string[] };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
function timed<T>(wait: Promise<T>): Promise<T> {
  const started = performance.now();
  return wait.then((value) => {
    counts.waits++;
    if (performance.now() - started > deadlockMs) counts.longWaits++;
    return value;
  });
}
function failed(error: unknown) {
  if (error instanceof DeadlockError) counts.deadlocks++;
  else counts.errors++;
  if (counts.messages.length < 5) counts.messages.push(String(error));
}

async function lockerTasks() {
  const locker = createLocker(pool, { deadlockTimeoutMs: deadlockMs, maxSessions: 8 });
  await Promise.all(
    Array.from({ length: tasks }, async (_, task) => {
      const random = generator(seed * 1000 + task);
      for (let round = 0; round < rounds; round++) {
        const a = Math.floor(random() * keys.length);
        const b = Math.floor(random() * keys.length);
        const [outer, inner] = [Math.min(a, b), Math.max(a, b)];
        const hold = random() * 10;
        try {
          const started = performance.now();
          await locker.withLock(keys[outer] as string, async () => {
            counts.waits++;
            if (performance.now() - started > deadlockMs) counts.longWaits++;
            await sleep(hold);
            if (inner !== outer) await timed(locker.withLock(keys[inner] as string, () => sleep(hold)));
          });
        } catch (error) {
          failed(error);
        }
      }
    }),
  );
  await locker.close();
}

async function lockTasks() {
  await Promise.all(
    Array.from({ length: tasks }, async (_, task) => {
      const random = generator(seed * 1000 + task);
      const locks: Lock[] = await Promise.all(keys.map((key) => newLock(pool, key, { deadlockTimeoutMs: deadlockMs })));
      for (let round = 0; round < rounds; round++) {
        const a = Math.floor(random() * keys.length);
        const b = Math.floor(random() * keys.length);
        const [outer, inner] = [locks[Math.min(a, b)] as Lock, locks[Math.max(a, b)] as Lock];
        const hold = random() * 10;
        try {
          await timed(outer.waitAndLock());
          try {
            await sleep(hold);
            if (inner !== outer) {
              await timed(inner.waitAndLock({ holding: [outer] }));
              await sleep(hold);
              await inner.unlock();
            }
          } finally {
            await outer.unlock();
          }
        } catch (error) {
          failed(error);
        }
      }
      await Promise.all(locks.map((lock) => lock.close()));
    }),
  );
}

await (kind === "locker" ? lockerTasks() : lockTasks());
process.stdout.write(`${JSON.stringify(counts)}\n`);
await pool.end();
