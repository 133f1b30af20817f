import type pg from "pg";

/** A query function over a pool, as an HTTP driver would be: each statement on any connection. */
export function queryFunction(pool: pg.Pool) {
  return async (text: string, params: unknown[]) => (await pool.query(text, params)).rows;
}

/**
 * Expires, on the server, every lease whose holder id begins with `application` (the lease Locker's
 * applicationName): what the lease table shows after its holder stalled past the TTL.
 */
export async function expireLeases(db: pg.Pool, application: string, table = "pglock_leases"): Promise<number> {
  const result = await db.query(
    `UPDATE ${table} SET holders = (SELECT pg_catalog.jsonb_object_agg(h.key, CASE WHEN h.key LIKE $1 THEN '0'::jsonb ELSE h.value END) ` +
      "FROM pg_catalog.jsonb_each(holders) AS h) " +
      "WHERE EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(holders) AS k WHERE k LIKE $1)",
    [`${application} %`],
  );
  return result.rowCount ?? 0;
}
