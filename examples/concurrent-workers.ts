// Concurrent workers: five workers, each with its own Lock on the same key, never overlap.
// Run it as `npm run demo` to see the timeline.
import pg from "pg";
import { newLock } from "pglock";

const WORKERS = Number(process.env.WORKERS ?? 5);
const WORK_MS = Number(process.env.WORK_MS ?? 300);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: WORKERS });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const start = performance.now();
const at = () => `+${String(Math.round(performance.now() - start)).padStart(5)} ms`;
const sections: [number, number][] = [];

async function runWorker(id: number) {
  await using lock = await newLock(pool, 500); // same lock id for all workers
  console.log(`${at()}  worker ${id}: waiting for lock...`);
  await lock.waitAndLock();
  const entered = performance.now();
  console.log(`${at()}  worker ${id}: acquired lock, processing...  ${"█".repeat(id * 2)}`);
  await new Promise((resolve) => setTimeout(resolve, WORK_MS)); // simulate work
  console.log(`${at()}  worker ${id}: releasing lock`);
  sections.push([entered, performance.now()]);
  await lock.unlock();
}

await Promise.all(Array.from({ length: WORKERS }, (_, i) => runWorker(i + 1)));
await pool.end();

sections.sort((a, b) => a[0] - b[0]);
const overlaps = sections.filter((section, i) => i > 0 && section[0] < (sections[i - 1] as [number, number])[1]);
if (overlaps.length > 0) throw new Error(`${overlaps.length} critical sections overlapped`);
console.log(`${sections.length} critical sections, one after another: they never overlapped`);
