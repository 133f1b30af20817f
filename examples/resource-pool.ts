// Resource pool: at most 3 holders of a resource across all processes, one lock per slot.
import pg from "pg";
import { type Lock, newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const SLOTS = 3;

async function acquireResource(): Promise<{ slot: number; release: () => Promise<void> } | undefined> {
  for (let slot = 1; slot <= SLOTS; slot++) {
    const lock: Lock = await newLock(pool, [10_000, slot]); // a pair key: (pool id, slot)
    if (await lock.lock()) return { slot, release: () => lock.close() };
    await lock.close();
  }
  return undefined;
}

const held = [];
for (let i = 0; i < 4; i++) {
  const resource = await acquireResource();
  console.log(resource ? `acquired resource ${resource.slot}` : "no resources available in pool");
  if (resource) held.push(resource);
}
if (held.length !== SLOTS) throw new Error(`expected ${SLOTS} slots, got ${held.length}`);
await Promise.all(held.map((resource) => resource.release()));
await pool.end();
