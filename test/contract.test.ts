// The contract (test/support/contract.ts) against the session Locker on each driver (pg, postgres.js,
// and Bun's SQL when the suite runs on Bun), the lease Locker on each driver and a bare query
// function, and the in-memory test double. PgBouncer's transaction pooling runs the lease Locker's
// share in test/pgbouncer/.

import pg from "pg";
import {
  type AnyLocker,
  createLocker,
  createMemoryLocker,
  type MemoryLocker,
  MemoryLockServer,
  type PoolDatabase,
} from "pglock";
import postgres from "postgres";
import { describe } from "vitest";
import { contractCases, type Implementation, leaseLockers } from "./support/contract.js";
import { databaseUrl, makeBunSql, makePool, makeSql, uniqueName } from "./support/db.js";
import { queryFunction } from "./support/leases.js";
import { runtime } from "./support/run.js";

/** Real Lockers on `connect()`'s handles; a loss is pg_terminate_backend of their sessions. */
function postgresLockers(connect: () => PoolDatabase): () => Implementation {
  return () => {
    const made: [AnyLocker, string][] = [];
    const admin = makePool({ max: 1 });
    return {
      make() {
        const app = uniqueName();
        const locker = createLocker(connect(), { applicationName: app });
        made.push([locker, app]);
        return locker;
      },
      async lose(locker) {
        const app = made.find(([l]) => l === locker)?.[1];
        await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
          [app],
        );
      },
      async cleanup() {
        await Promise.all(made.map(([locker]) => locker.close()));
      },
    };
  };
}

/** One small pool for the lease implementations' losses, ended after the file. */
let adminPool: pg.Pool | undefined;
const admin = () => {
  adminPool ??= makePool({ max: 2 });
  return adminPool;
};

/** A pool of the test's own, ended with it. */
function ownPool() {
  const db = new pg.Pool({ connectionString: databaseUrl(), max: 5 });
  db.on("error", () => {});
  return { db, end: () => db.end() };
}

const postgresPg = postgresLockers(() => makePool());
// A caller's transform and types must not change what pglock reads.
const postgresJs = postgresLockers(() => makeSql({ transform: postgres.camel, types: { bigint: postgres.BigInt } }));

function memory(): Implementation {
  const server = new MemoryLockServer();
  const made: MemoryLocker[] = [];
  return {
    make() {
      const locker = createMemoryLocker({ server });
      made.push(locker);
      return locker;
    },
    async lose(locker) {
      (locker as MemoryLocker).simulateLoss();
    },
    async cleanup() {
      await Promise.all(made.map((locker) => locker.close()));
    },
  };
}

const implementations: [string, () => Implementation][] = [
  ["PostgreSQL Locker (pg)", postgresPg],
  ["PostgreSQL Locker (postgres.js)", postgresJs],
  ...(runtime === "bun"
    ? [["PostgreSQL Locker (Bun SQL)", postgresLockers(makeBunSql)] as [string, () => Implementation]]
    : []),
  ["lease Locker (pg.Pool)", leaseLockers(() => ownPool(), admin)],
  // A bare query function: every statement may land on a different server session.
  [
    "lease Locker (query function)",
    leaseLockers(() => {
      const { db, end } = ownPool();
      return { db: queryFunction(db), end };
    }, admin),
  ],
  [
    "lease Locker (postgres.js)",
    leaseLockers(() => {
      const sql = postgres(databaseUrl(), { max: 5, onnotice: () => {}, transform: postgres.camel });
      return { db: sql, end: () => sql.end() };
    }, admin),
  ],
  ...(runtime === "bun"
    ? [
        [
          "lease Locker (Bun SQL)",
          // makeBunSql's instance is closed after the file.
          leaseLockers(() => ({ db: makeBunSql(), end: async () => {} }), admin),
        ] as [string, () => Implementation],
      ]
    : []),
  ["in-memory Locker", memory],
];

describe.each(implementations)("%s", (_name, implementation) => {
  contractCases(implementation);
});
