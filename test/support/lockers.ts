import { createLocker, type Locker } from "pglock";
import { afterEach } from "vitest";
import { makePool } from "./db.js";

const lockers: Locker[] = [];
afterEach(async () => {
  await Promise.all(lockers.splice(0).map((locker) => locker.close()));
});

/** A Locker closed after the test (on a pool of its own unless one is given). */
export function makeLocker(options: Parameters<typeof createLocker>[1] = {}, pool = makePool()): Locker {
  const locker = createLocker(pool, options);
  lockers.push(locker);
  return locker;
}
