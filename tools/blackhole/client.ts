/**
 * A client for the black-hole test, run inside a network namespace whose traffic the test drops.
 * BLACKHOLE_MODE: "locker" (a Locker holds BLACKHOLE_KEY), "lock" (a Lock holds it) or "waiter" (a
 * Locker waits for it). Events go to stdout as JSON lines with a monotonic timestamp
 * (process.hrtime.bigint() is one clock for every process of the machine, namespaces included).
 */
import pg from "pg";
import { createLocker, newLock } from "pglock";

const mode = process.env.BLACKHOLE_MODE;
const key = BigInt(process.env.BLACKHOLE_KEY as string);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on("error", () => {});
const emit = (e: string, detail: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ e, t: String(process.hrtime.bigint()), ...detail })}\n`);
process.on("unhandledRejection", (error) => emit("unhandled", { message: String(error) }));

if (mode === "lock") {
  const lock = await newLock(pool, key);
  lock.signal.addEventListener("abort", () => emit("lost", { message: String(lock.signal.reason) }));
  emit((await lock.lock()) ? "held" : "busy");
} else {
  const locker = createLocker(pool);
  if (mode === "waiter") emit("waiting");
  locker.acquire(key).then(
    (handle) => {
      emit("held");
      handle.signal.addEventListener("abort", () => emit("lost", { message: String(handle.signal.reason) }));
    },
    (error: unknown) => emit("failed", { message: String(error) }),
  );
}
