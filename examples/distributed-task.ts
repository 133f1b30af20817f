// Distributed task execution: a task runs only once across servers; the lock key is the task's name.
import pg from "pg";
import { newLock } from "pglock";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });

async function processTask(taskId: string): Promise<"done" | "skipped"> {
  await using lock = await newLock(pool, `task:${taskId}`); // names hash to int64 as go-pglock's hashToInt64
  if (!(await lock.lock())) {
    console.log(`task ${taskId} is already being processed`);
    return "skipped";
  }
  try {
    console.log(`Processing task ${taskId}...`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    console.log(`Task ${taskId} completed`);
    return "done";
  } finally {
    await lock.unlock();
  }
}

// Three "servers" pick up the same task at once: exactly one runs it.
const results = await Promise.all([processTask("invoice-42"), processTask("invoice-42"), processTask("invoice-42")]);
if (results.filter((r) => r === "done").length !== 1) throw new Error(`expected one run, got ${results}`);
await pool.end();
