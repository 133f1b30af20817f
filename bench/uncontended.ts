/** Scenario 1: one key, acquire + release, one at a time: the cost of a lock call. */
import pg from "pg";
import { createLeaseLocker, createLocker, newLock } from "pglock";
import postgres from "postgres";
import {
  type Contender,
  freshKey,
  interleaved,
  latencyTable,
  log,
  quick,
  ROUNDS,
  type Row,
  sequential,
  WARMUP,
} from "./harness.js";
import { type Peer, sortPeers } from "./peers.js";
import type { PgbenchResult } from "./pgbench.js";

const ITERATIONS = quick ? 50 : 3000;

export async function uncontended(url: string, peers: Peer[], pgbench?: () => PgbenchResult | string) {
  log("## 1. Uncontended acquire + release, one key, sequential");
  log();
  log(
    `${ITERATIONS} samples per implementation, taken in ${ROUNDS} interleaved rounds (each after ${WARMUP} of warm-up); latency of one acquire + release, in µs. The baseline is hand-written \`pg\` code with unnamed statements, as most applications write it; pglock prepares its lock statements by name.`,
  );
  log();
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  const key = String(freshKey());
  const [raw, lock, locker] = pgContenders(pool, key) as [Contender, Contender, Contender];
  const contenders: Contender[] = [
    raw,
    sequential("raw `pg`, one client, named prepared statements", async () => {
      const client = await pool.connect();
      return {
        op: async () => {
          await client.query({ name: "bench_try", text: "SELECT pg_try_advisory_lock($1)", values: [key] });
          await client.query({ name: "bench_unlock", text: "SELECT pg_advisory_unlock($1)", values: [key] });
        },
        teardown: async () => client.release(),
      };
    }),
    lock,
    locker,
    sequential("pglock Locker: `withLock()`", async () => {
      const locker = createLocker(pool);
      return { op: () => locker.withLock(key, () => {}), teardown: () => locker.close() };
    }),
    sequential("raw postgres.js, one reserved connection: `pg_try_advisory_lock` + `pg_advisory_unlock`", async () => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      const reserved = await sql.reserve();
      return {
        op: async () => {
          await reserved.unsafe("SELECT pg_try_advisory_lock($1)", [key]);
          await reserved.unsafe("SELECT pg_advisory_unlock($1)", [key]);
        },
        teardown: async () => {
          reserved.release();
          await sql.end();
        },
      };
    }),
    sequential("pglock Locker on postgres.js: `tryAcquire()` + `release()`", async () => {
      const sql = postgres(url, { onnotice: () => {} });
      const locker = createLocker(sql);
      return {
        op: async () => (await locker.tryAcquire(key))?.release(),
        teardown: async () => {
          await locker.close();
          await sql.end();
        },
      };
    }),
    sequential("pglock lease Locker (`pg.Pool`): `tryAcquire()` + `release()`", async () => {
      const leases = createLeaseLocker(pool);
      return { op: async () => (await leases.tryAcquire(key))?.release(), teardown: () => leases.close() };
    }),
  ];
  const { usable, skipped } = sortPeers(peers);
  for (const peer of usable) {
    const name = `bench-${freshKey()}`;
    const slow = peer.name.includes("advisory-lock");
    contenders.push(
      sequential(
        `${peer.name}${slow ? ` (${Math.ceil(500 / ROUNDS) * ROUNDS} samples)` : ""}`,
        async () => ({
          op: async () => {
            const release = await peer.tryAcquire(name);
            await release?.();
          },
          teardown: async () => {},
        }),
        slow ? Math.ceil(Math.min(ITERATIONS, 500) / ROUNDS) : undefined,
      ),
    );
  }
  const rows: Row[] = [...(await interleaved(contenders, Math.ceil(ITERATIONS / ROUNDS))), ...skipped];
  await pool.end();
  const measured = pgbench?.();
  if (measured !== undefined) {
    rows.push([
      "pgbench `-M prepared`, 1 client (C): the same two statements",
      typeof measured === "string" ? measured : measured.latency,
    ]);
  }
  latencyTable(rows);
  return rows;
}

/** Hand-written `pg`, a `Lock` and a Locker on one key: the rows measured on Node and on Bun (bun-uncontended.ts). */
export function pgContenders(pool: pg.Pool, key: string, on = ""): Contender[] {
  return [
    sequential(
      `raw \`pg\`${on}, one client (baseline): \`pg_try_advisory_lock\` + \`pg_advisory_unlock\``,
      async () => {
        const client = await pool.connect();
        return {
          op: async () => {
            await client.query("SELECT pg_try_advisory_lock($1)", [key]);
            await client.query("SELECT pg_advisory_unlock($1)", [key]);
          },
          teardown: async () => client.release(),
        };
      },
    ),
    sequential(`pglock \`Lock\`${on}: \`lock()\` + \`unlock()\``, async () => {
      const lock = await newLock(pool, BigInt(key));
      return {
        op: async () => {
          await lock.lock();
          await lock.unlock();
        },
        teardown: () => lock.close(),
      };
    }),
    sequential(`pglock Locker${on}: \`tryAcquire()\` + \`release()\``, async () => {
      const locker = createLocker(pool);
      return { op: async () => (await locker.tryAcquire(key))?.release(), teardown: () => locker.close() };
    }),
  ];
}
