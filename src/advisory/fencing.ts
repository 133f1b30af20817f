/**
 * Fencing tokens: a number per key that strictly increases with every grant, so a resource can
 * refuse a write from a holder whose lock was lost meanwhile (a paused process, a cut connection).
 * The counter is a row per key, incremented by the holder while it holds the exclusive lock, on the
 * very session that holds it, so the order of tokens is the order of grants. Across a failover the
 * server's timeline, in the token's high bits, keeps them increasing (sql/fencing.ts).
 */

import type { LockKey } from "../key.js";
import { serverError, sqlState } from "../server-errors.js";
import type { Session } from "../session/session.js";
import { fencingTableSql, nextToken } from "../sql/fencing.js";

/** A failed token statement as a pglock error: the session's own loss stays what it is. */
function fencingError(error: unknown, key: LockKey): Error {
  return serverError(error, `lock ${key}: a fencing token could not be drawn`, {
    hints: {
      "42501":
        ": the role may not use the fencing table; create it as its owner (fencingTableSql()) and grant SELECT, INSERT, UPDATE on it",
    },
  });
}

export class FencingTokens {
  readonly #table: string;
  #created: Promise<void> | undefined;

  constructor(table: string) {
    this.#table = table;
  }

  /**
   * The next token for `key`, drawn on `session`. The table is created only when it is missing: a
   * least-privilege role may use a table its owner created (fencingTableSql) without CREATE on the
   * schema, which `CREATE TABLE IF NOT EXISTS` checks even when the table exists (PostgreSQL 15+).
   */
  async next(session: Session, key: LockKey): Promise<bigint> {
    try {
      return await this.#draw(session, key);
    } catch (error) {
      if (sqlState(error) !== "42P01") throw fencingError(error, key);
    }
    this.#created ??= this.#create(session).catch((error) => {
      this.#created = undefined;
      throw fencingError(error, key);
    });
    await this.#created;
    try {
      return await this.#draw(session, key);
    } catch (error) {
      throw fencingError(error, key);
    }
  }

  async #draw(session: Session, key: LockKey): Promise<bigint> {
    const rows = await session.query(nextToken(this.#table, key));
    return BigInt(rows[0]?.token as string);
  }

  async #create(session: Session) {
    try {
      await session.query({ text: fencingTableSql(this.#table), values: [] });
    } catch (error) {
      // Two processes creating it at once: one loses on the catalog's unique index; the table exists.
      if (sqlState(error) !== "23505" && sqlState(error) !== "42P07") throw error;
    }
  }
}
