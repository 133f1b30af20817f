// Distributed task execution: a task runs only once across servers; the lock key is the task's name.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", (error) => console.error(`pool: ${error.message}`));
const SERVERS = 3;
let skipped = 0;

async function processTask(taskId: string): Promise<"done" | "skipped"> {
  await using lock = await newLock(pool, `task:${taskId}`); // names hash to int64 as go-pglock's hashToInt64
  if (!(await lock.lock())) {
    console.log(`task ${taskId} is already being processed`);
    skipped++;
    return "skipped";
  }
  try {
    console.log(`Processing task ${taskId}...`);
    // The task outlasts the other servers' attempts (a lock excludes only runs that overlap): here it
    // lasts until they have been turned away, at most 10 s.
    for (let waited = 0; skipped < SERVERS - 1 && waited < 10_000; waited += 20) await sleep(20);
    console.log(`Task ${taskId} completed`);
    return "done";
  } finally {
    await lock.unlock();
  }
}

// Three "servers" pick up the same task at once: exactly one runs it.
const results = await Promise.all(Array.from({ length: SERVERS }, () => processTask("invoice-42")));
if (results.filter((r) => r === "done").length !== 1) throw new Error(`expected one run, got ${results}`);
await pool.end();
