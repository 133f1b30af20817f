import { randomBytes } from "node:crypto";
import pg from "pg";
import type { PoolDatabase } from "pglock";
import postgres from "postgres";
import { afterAll, inject } from "vitest";

export function databaseUrl(): string {
  return inject("databaseUrl");
}

const pools: pg.Pool[] = [];
const sqls: postgres.Sql[] = [];
afterAll(async () => {
  await Promise.all([...pools.splice(0).map((pool) => pool.end()), ...sqls.splice(0).map((sql) => sql.end())]);
});

/** A pool that is ended after the test file; its sessions carry `application_name`. */
export function makePool(config: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl(), max: 20, ...config });
  pool.on("error", () => {}); // an idle client killed by a test must not crash the run
  pools.push(pool);
  return pool;
}

/** A postgres.js instance that is ended after the test file. */
export function makeSql(options: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  const sql = postgres(databaseUrl(), { onnotice: () => {}, ...options });
  sqls.push(sql as unknown as postgres.Sql);
  return sql as unknown as postgres.Sql;
}

/** Bun's built-in client, when the suite runs on Bun (`npm run test:runtimes`); ended after the test file. */
const BunSQL = (globalThis as { Bun?: { SQL: new (url: string) => PoolDatabase & { close(): Promise<void> } } }).Bun
  ?.SQL;
const bunSqls: { close(): Promise<void> }[] = [];
afterAll(async () => {
  await Promise.all(bunSqls.splice(0).map((sql) => sql.close()));
});
export function makeBunSql(): PoolDatabase {
  if (!BunSQL) throw new Error("Bun's SQL exists only on Bun");
  const sql = new BunSQL(databaseUrl());
  bunSqls.push(sql);
  return sql;
}

/** The drivers pglock supports, each as a factory of the handle a caller passes to newLock or createLocker. */
export const drivers = [
  { name: "pg.Pool", connect: (): PoolDatabase => makePool() },
  { name: "postgres.js", connect: (): PoolDatabase => makeSql() },
  ...(BunSQL ? [{ name: "Bun SQL", connect: makeBunSql }] : []),
];

/** A random int64 key, so that test files running in parallel never share a lock. */
export function uniqueKey(): bigint {
  return randomBytes(8).readBigInt64BE();
}

export function uniqueName(prefix = "pglock-test"): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

export interface AdvisoryRow {
  pid: number;
  mode: string;
  granted: boolean;
}

/** The advisory locks on an int64 key, as pg_locks shows them (classid = high 32 bits, objid = low). */
export async function locksOnKey(pool: pg.Pool, key: bigint): Promise<AdvisoryRow[]> {
  const unsigned = BigInt.asUintN(64, key);
  const { rows } = await pool.query(
    `SELECT pid, mode, granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
       AND classid = $1::oid AND objid = $2::oid ORDER BY granted DESC, pid`,
    [String(unsigned >> 32n), String(unsigned & 0xffffffffn)],
  );
  return rows;
}

/** Sessions whose application_name begins with the name `name` (pglock adds who it is after a space). */
export async function sessionsNamed(pool: pg.Pool, name: string): Promise<number[]> {
  const { rows } = await pool.query(
    "SELECT pid FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1",
    [name],
  );
  return rows.map((row) => row.pid as number);
}

/** Polls `check` until it returns true or `timeoutMs` passes (a generous bound, not a timing assertion). */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
