// Migrating from the advisory-lock package without a cutover: it keys a name as two int32 taken from
// the name's SHA-256 (little-endian), so pglock's pair key of the same two numbers is the same lock,
// and old and new replicas exclude each other while you roll out.
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import pg from "pg";
import { createLocker } from "pglock";

/** advisory-lock's key for `name`, as a pglock pair key. */
function advisoryLockKey(name: string): [number, number] {
  const digest = createHash("sha256").update(name).digest();
  return [digest.readInt32LE(0), digest.readInt32LE(4)];
}

// advisory-lock is CommonJS with a default export: require() reads it alike on Node, Bun and Deno.
const { default: advisoryLock, strToKey } = createRequire(import.meta.url)(
  "advisory-lock",
) as typeof import("advisory-lock");

const name = `nightly-report-${process.pid}`;
if (String(strToKey(name)) !== String(advisoryLockKey(name))) throw new Error("the keys must be equal");
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const locker = createLocker(pool);
const old = advisoryLock(process.env.DATABASE_URL as string)(name);

const release = await old.tryLock(); // an old replica holds it
if (!release) throw new Error("the old library could not take a free lock");
const whileOldHolds = await locker.tryAcquire(advisoryLockKey(name));
console.log(whileOldHolds ? "both held it: the keys differ" : "pglock waits for the old replica's lock");
await release();
const afterwards = await locker.tryAcquire(advisoryLockKey(name));
console.log(afterwards ? "pglock takes it once the old replica let go" : "still taken");
await afterwards?.release();
await locker.close();
await pool.end();
if (whileOldHolds || !afterwards) throw new Error("advisory-lock and pglock must share the lock");
