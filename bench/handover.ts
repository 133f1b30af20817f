/** Scenario 2: eight waiters on one key; the time from a release to the next waiter's grant. */
import pg from "pg";
import { createLeaseLocker, createLocker, newLock } from "pglock";
import { type Contender, freshKey, interleaved, latencyTable, log, quick, ROUNDS, type Row, sleep } from "./harness.js";
import { leaseHandoverAcrossProcesses } from "./lease-handover.js";
import { type Peer, sortPeers } from "./peers.js";

const HANDOVERS = quick ? 16 : 400;

/** `contenders` loops that each take the lock, hold it ~1 ms, release; measures release → next grant. */
async function handover(contenders: number, count: number, take: (i: number) => Promise<() => Promise<void>>) {
  const gaps: number[] = [];
  let releasedAt: number | undefined;
  let remaining = count + contenders;
  await Promise.all(
    Array.from({ length: contenders }, async (_, i) => {
      while (remaining > 0) {
        const release = await take(i);
        const grantedAt = performance.now();
        if (releasedAt !== undefined) gaps.push(grantedAt - releasedAt);
        remaining--;
        await sleep(1);
        releasedAt = performance.now();
        await release();
      }
    }),
  );
  return gaps.slice(contenders); // the first grants are not hand-overs
}

function contest(
  name: string,
  setup: () => Promise<{ take(i: number): Promise<() => Promise<void>>; teardown(): Promise<void> }>,
): Contender {
  return {
    name,
    async setup() {
      const { take, teardown } = await setup();
      return { measure: (count) => handover(8, count, take), teardown };
    },
  };
}

export async function handovers(url: string, peers: Peer[]) {
  log("## 2. Hand-over under contention: 8 waiters on one key");
  log();
  log(
    `${HANDOVERS} hand-overs per implementation in ${ROUNDS} interleaved rounds; time from the start of a release to the next waiter's grant, in µs. Each holder keeps the lock ~1 ms.`,
  );
  log();
  const pool = new pg.Pool({ connectionString: url, max: 40 });
  const contenders: Contender[] = [
    contest("raw `pg`: 8 clients in `pg_advisory_lock` (baseline)", async () => {
      const key = String(freshKey());
      const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
      return {
        take: async (i) => {
          const client = clients[i] as pg.PoolClient;
          await client.query("SELECT pg_advisory_lock($1)", [key]);
          return async () => {
            await client.query("SELECT pg_advisory_unlock($1)", [key]);
          };
        },
        teardown: async () => {
          for (const client of clients) client.release();
        },
      };
    }),
    contest("pglock `Lock`: 8 Locks in `waitAndLock()`", async () => {
      const key = freshKey();
      const locks = await Promise.all(Array.from({ length: 8 }, () => newLock(pool, key)));
      return {
        take: async (i) => {
          const lock = locks[i] as Awaited<ReturnType<typeof newLock>>;
          await lock.waitAndLock();
          return async () => {
            await lock.unlock();
          };
        },
        teardown: async () => {
          await Promise.all(locks.map((lock) => lock.close()));
        },
      };
    }),
    contest("pglock Locker: 8 Lockers in `acquire()`", async () => {
      const key = freshKey();
      const lockers = Array.from({ length: 8 }, () => createLocker(pool, { maxSessions: 2 }));
      return {
        take: async (i) => {
          const handle = await (lockers[i] as ReturnType<typeof createLocker>).acquire(key);
          return () => handle.release();
        },
        teardown: async () => {
          await Promise.all(lockers.map((locker) => locker.close()));
        },
      };
    }),
    contest("pglock Locker: 8 `acquire()` in one Locker (queued locally)", async () => {
      const key = freshKey();
      const one = createLocker(pool);
      return {
        take: async () => {
          const handle = await one.acquire(key);
          return () => handle.release();
        },
        teardown: () => one.close(),
      };
    }),
    contest("pglock lease Locker: 8 lease Lockers in one process (a release wakes the others)", async () => {
      const key = freshKey();
      const lockers = Array.from({ length: 8 }, () => createLeaseLocker(pool));
      return {
        take: async (i) => {
          const lease = await (lockers[i] as ReturnType<typeof createLeaseLocker>).acquire(key);
          return () => lease.release();
        },
        teardown: async () => {
          await Promise.all(lockers.map((locker) => locker.close()));
        },
      };
    }),
  ];
  const { usable, skipped } = sortPeers(peers);
  for (const peer of usable) {
    const name = `bench-${freshKey()}`;
    contenders.push(contest(peer.name, async () => ({ take: () => peer.acquire(name), teardown: async () => {} })));
  }
  const rows: Row[] = [...(await interleaved(contenders, Math.ceil(HANDOVERS / ROUNDS))), ...skipped];
  // Across processes, after the interleaved rounds (eight more processes would disturb them).
  for (const maxPollMs of [50, 1000]) rows.push(await leaseHandoverAcrossProcesses(url, HANDOVERS, maxPollMs));
  await pool.end();
  latencyTable(rows);
  return rows;
}
