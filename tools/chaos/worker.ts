/**
 * A chaos worker: increments a counter row by reading it and writing back n + 1, protected only by
 * the advisory lock, each read-modify-write fenced by the handle's fencing token. Every event goes to stdout as
 * a JSON line with a monotonic timestamp (process.hrtime.bigint() is one clock for all processes of
 * a machine). On SIGTERM it stops taking the lock, says "idle", and exits when stdin closes.
 *
 * CHAOS_DRIVER picks the driver pglock runs on: "pg" (a pg.Pool) or "postgres.js" (a postgres.js sql);
 * the orchestrator gives half the workers each, so both drivers contend for the same lock.
 * CHAOS_MODE=lease puts the workers on the lease Locker instead (TTL 1.5 s, renewed every 200 ms).
 *
 * CHAOS_BROKEN emulates a broken lock library, to prove the checkers catch it:
 * - ignore-loss: ignores the loss signal and writes without the fencing guard;
 * - trust-timeout: raw pg waits abandoned on a client-side timeout, trusted to mean "not granted";
 * - wrong-session: releases on a different session than the one holding the lock, ignoring `false`.
 */
import pg from "pg";
import { createLeaseLocker, createLocker, type LockHandle } from "pglock";
import postgres from "postgres";

const id = Number(process.env.CHAOS_WORKER);
const broken = process.env.CHAOS_BROKEN ?? "";
const driver = process.env.CHAOS_DRIVER === "postgres.js" ? "postgres.js" : "pg";
const leases = process.env.CHAOS_MODE === "lease";
/** Lease statements run on the pool's own connections: named, so the terminate fault finds them. */
const APPLICATION = "pglock-chaos";
const KEY = "pglock-chaos";
const direct = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const viaProxy = new pg.Pool({
  connectionString: process.env.LOCK_URL,
  max: 4,
  connectionTimeoutMillis: 2_000,
  ...(leases ? { application_name: `${APPLICATION} lease-worker` } : {}),
});
direct.on("error", () => {});
viaProxy.on("error", () => {});
const raw = broken === "trust-timeout" || broken === "wrong-session";
/**
 * The worker's own clients never crash it, so a crash can only be pglock's. Their no-op 'error'
 * listener is added as each client is made (pg-pool's 'connect' event): one added after a checkout
 * comes too late for a FATAL that arrives in the checkout's own socket read (see src/session/pg.ts).
 * pglock's clients (viaProxy, unless a raw variant uses it) get none: pglock must handle them itself.
 */
const quiet = (client: pg.PoolClient) => client.on("error", () => {});
direct.on("connect", quiet);
if (raw) viaProxy.on("connect", quiet);
const sqlViaProxy =
  driver === "postgres.js"
    ? postgres(process.env.LOCK_URL as string, {
        max: 4,
        connect_timeout: 2,
        onnotice: () => {},
        // In lease mode pglock runs its statements on this very instance. postgres.js fetches array
        // types as each connection starts (fetch_types), in a promise nobody awaits: a reset right
        // then is an unhandled rejection (read ECONNRESET) that ends the process. Seen here; see
        // porsager/postgres#600 and connection.js fetchArrayTypes. pglock's queries need no array types.
        ...(leases ? { connection: { application_name: `${APPLICATION} lease-worker` }, fetch_types: false } : {}),
      })
    : undefined;
const emit = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify({ t: String(process.hrtime.bigint()), w: id, ...event })}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
process.on("unhandledRejection", (error) => {
  emit({ e: "unhandled", message: error instanceof Error ? String(error.stack) : String(error) });
  process.exit(99);
});
let stopping = false;
process.on("SIGTERM", () => {
  stopping = true;
});

/**
 * The critical section: read n, pause, write n + 1, record the increment. With a token, the read
 * claims it (the row keeps the highest token that read it) and the write lands only if no newer
 * holder has claimed since: a holder that lost its lock can neither write after its successor read,
 * nor overwrite its successor's write. (Guarding only the write would let a stale holder write
 * between its successor's read and write: a lost update.)
 */
async function increment(token: bigint | undefined, lost: AbortSignal | undefined) {
  const read =
    token === undefined
      ? await direct.query("SELECT n FROM chaos_counter WHERE id = 1")
      : await direct.query("UPDATE chaos_counter SET token = $1 WHERE id = 1 AND token < $1 RETURNING n", [
          String(token),
        ]);
  if (read.rowCount !== 1) {
    emit({ e: "fenced", token: String(token) });
    return;
  }
  const n = Number(read.rows[0].n);
  // The orchestrator ends a broken variant's lock session on this event, mid-section (see run.ts).
  emit({ e: "read", n });
  // Broken variants dwell longer between read and write, so the successor that a fault lets in reads
  // inside the window (what makes their bug show as a lost update).
  await sleep(broken ? 60 + Math.random() * 90 : Math.random() * 4);
  if (lost?.aborted) return;
  const client = await direct.connect();
  try {
    await client.query("BEGIN");
    const update =
      token === undefined
        ? await client.query("UPDATE chaos_counter SET n = $1 WHERE id = 1", [n + 1])
        : await client.query("UPDATE chaos_counter SET n = $1 WHERE id = 1 AND token = $2", [n + 1, String(token)]);
    if (update.rowCount === 1) {
      await client.query("INSERT INTO chaos_increments (worker, n, token) VALUES ($1, $2, $3)", [
        id,
        n + 1,
        token === undefined ? null : String(token),
      ]);
      await client.query("COMMIT");
      emit({ e: "write", n: n + 1, token: token === undefined ? null : String(token) });
    } else {
      await client.query("ROLLBACK");
      emit({ e: "fenced", token: String(token) });
    }
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

async function withPglock() {
  const locker = leases
    ? createLeaseLocker(sqlViaProxy ?? viaProxy, {
        applicationName: APPLICATION,
        // The margin covers event-loop stalls too: 8 workers and the server share this machine's CPUs.
        ttlMs: 1_500,
        renewEveryMs: 200,
        expiryMarginMs: 500,
        maxPollMs: 50,
      })
    : createLocker(sqlViaProxy ?? viaProxy, {
        applicationName: APPLICATION,
        keepaliveMs: 300,
        probeTimeoutMs: 700,
        maxSessions: 2,
      });
  while (!stopping) {
    const controller = new AbortController();
    if (Math.random() < 0.1) setTimeout(() => controller.abort(new Error("chaos abort")), Math.random() * 30);
    let handle: LockHandle;
    try {
      handle = await locker.acquire(KEY, {
        fencing: broken !== "ignore-loss",
        timeout: 100 + Math.random() * 900,
        signal: controller.signal,
      });
    } catch (error) {
      emit({ e: "not-acquired", code: (error as { code?: string }).code ?? (error as Error).message });
      await sleep(10);
      continue;
    }
    emit({ e: "granted", token: handle.fencingToken === undefined ? null : String(handle.fencingToken) });
    // A library that ignores loss never tells its caller: its holder goes on to "releasing".
    const onLost = () => emit({ e: "lost" });
    if (broken !== "ignore-loss") handle.signal.addEventListener("abort", onLost, { once: true });
    try {
      await increment(handle.fencingToken, broken === "ignore-loss" ? undefined : handle.signal);
    } catch (error) {
      emit({ e: "work-failed", message: (error as Error).message });
    }
    handle.signal.removeEventListener("abort", onLost);
    emit({ e: "releasing" });
    await handle.release().catch(() => {});
  }
  await locker.close();
}

/** The broken variants' own lock code, written as the bugs they emulate. */
async function withBrokenRawLocks() {
  while (!stopping) {
    const client = await viaProxy.connect().catch(() => undefined);
    if (!client) {
      await sleep(50);
      continue;
    }
    let held = false;
    try {
      // Bug: a client-side timeout, after which the server-side wait goes on and may be granted later.
      const wait = client.query("SELECT pg_advisory_lock(hashtext($1))", [KEY]);
      wait.catch(() => {});
      held = await Promise.race([
        wait.then(() => true),
        sleep(broken === "trust-timeout" ? 30 : 5_000).then(() => false),
      ]);
      if (!held) {
        emit({ e: "not-acquired", code: "client-timeout" });
        client.release(); // back to the pool, with the wait still running: the trusted timeout
        continue;
      }
      emit({ e: "granted", token: null });
      await increment(undefined, undefined);
      emit({ e: "releasing" });
      if (broken === "wrong-session") {
        // Bug: the release goes to another session; its `false` is ignored.
        await direct.query("SELECT pg_advisory_unlock(hashtext($1))", [KEY]);
      } else {
        await client.query("SELECT pg_advisory_unlock(hashtext($1))", [KEY]);
      }
      client.release();
    } catch (error) {
      emit({ e: "work-failed", message: (error as Error).message });
      client.release(true);
    }
  }
}

emit({ e: "start", driver: raw ? "raw pg" : driver, mode: leases ? "lease" : "session" });
await (raw ? withBrokenRawLocks() : withPglock());
emit({ e: "idle" });
// The orchestrator looks at pg_locks now, while this process still has its connections, then closes stdin.
await new Promise((resolve) => process.stdin.on("close", resolve).resume());
// postgres.js's end() waits for every query it has; one on a connection the fault proxy cut may never
// settle (seen in lease mode: the process then exited 13 with this await unsettled). Bounded.
await Promise.allSettled([direct.end(), viaProxy.end(), sqlViaProxy?.end({ timeout: 2 })]);
emit({ e: "exit" });
