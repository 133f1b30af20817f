/**
 * The lease table, created on first use: by the lease Locker for its leases, and by the session
 * Locker for the runs of `atLeastMs` (issue #25). Created only when a statement finds it missing, so a
 * least-privilege role can use a table its owner created (leaseTableSql).
 */
import { DatabaseError } from "../errors.js";
import { sqlState } from "../server-errors.js";
import { LEASE_TIMELINE_SHIFT, type LeaseStatements, leaseStatements } from "./lease.js";

export class LeaseTable {
  readonly name: string;
  readonly sql: LeaseStatements;
  readonly #exec: (text: string) => Promise<unknown>;
  #created: Promise<void> | undefined;

  /** `exec` runs one statement without parameters (the CREATE statements). */
  constructor(name: string, exec: (text: string) => Promise<unknown>) {
    this.name = name;
    this.sql = leaseStatements(name);
    this.#exec = exec;
  }

  /** Runs `attempt`; the first time the table is missing, creates it (and its sequence) and runs it again. */
  async run<T>(attempt: () => Promise<T>): Promise<T> {
    try {
      return await attempt();
    } catch (error) {
      const cause = sqlState(error) === undefined ? (error as Error).cause : error;
      if (sqlState(cause) !== "42P01") throw error;
      // The table is there but its token sequence is gone (an operator dropped it): a new sequence
      // would start again at 1, below tokens already given. Refuse rather than go back (issue #26).
      if (String((cause as Error | undefined)?.message).includes(`${this.name}_token"`)) {
        throw new DatabaseError(
          `the lease table's token sequence ${this.name}_token is missing: pglock will not recreate it, since new ` +
            `tokens would start below those already given; recreate it above them: CREATE SEQUENCE ${this.name}_token; ` +
            `SELECT setval('${this.name}_token', (SELECT max(token) & ((1::int8 << ${LEASE_TIMELINE_SHIFT}) - 1) FROM ${this.name}))`,
          { cause },
        );
      }
      await this.#create();
      return await attempt();
    }
  }

  #create(): Promise<void> {
    this.#created ??= (async () => {
      for (const statement of this.sql.create) {
        try {
          await this.#exec(statement);
        } catch (error) {
          // Created by another process at the same moment: it exists, which is what was wanted.
          const state = sqlState(error) ?? sqlState((error as Error).cause);
          if (state !== "23505" && state !== "42P07") throw error;
        }
      }
    })().catch((error: unknown) => {
      this.#created = undefined;
      throw error;
    });
    return this.#created;
  }
}

/** A reserve statement's answer (sql/lease.ts): undefined when the run was recorded, else how long an earlier one keeps the key. */
export function keptFor(rows: readonly Record<string, unknown>[]): number | undefined {
  if (Number(rows[0]?.reserved) > 0) return undefined;
  const kept = Number(rows[0]?.kept_ms);
  // Refused by a run this statement's snapshot did not show yet: look again soon.
  return Number.isFinite(kept) && kept > 0 ? kept : 50;
}
