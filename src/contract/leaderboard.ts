/**
 * The elections' records in the lease table (sql/leaders.ts), for the session and lease Lockers: each
 * gives the statements its way to run, and says who holds a handle (a backend pid, a lease holder).
 */
import type { LockKey } from "../key.js";
import type { Statement } from "../sql/advisory.js";
import { type HolderKind, type LeaderStatements, leaderStatements } from "../sql/leaders.js";
import type { LeaseTable } from "../sql/lease-table.js";
import type { Leaderboard, Leadership } from "./backend.js";
import type { LockHandle } from "./handle.js";

export interface TableLeaderboardOptions {
  readonly kind: HolderKind;
  /** The table, created on first use. */
  readonly table: LeaseTable;
  /** Runs one statement. */
  readonly query: (statement: Statement) => Promise<readonly Record<string, unknown>[]>;
  /** Who holds `handle` on the server: its session's backend pid, or its lease holder id. */
  readonly holderOf: (handle: LockHandle) => string | number | undefined;
}

export class TableLeaderboard implements Leaderboard {
  readonly waitsOnServer: boolean;
  readonly #sql: LeaderStatements;
  readonly #options: TableLeaderboardOptions;

  constructor(options: TableLeaderboardOptions) {
    this.#options = options;
    this.#sql = leaderStatements(options.table.name, options.kind);
    this.waitsOnServer = options.kind === "session";
  }

  async proclaim(handle: LockHandle, record: { owner: string; payload: unknown }, term: bigint, termMs: number) {
    const holder = this.#options.holderOf(handle);
    if (holder === undefined) return false;
    const text = JSON.stringify({ owner: record.owner, payload: record.payload ?? null, holder });
    return (await this.#run(this.#sql.proclaim(handle.key, text, term, termMs))).length > 0;
  }

  async renew(key: LockKey, term: bigint, termMs: number): Promise<boolean> {
    return (await this.#run(this.#sql.renew(key, term, termMs))).length > 0;
  }

  async resign(key: LockKey, term: bigint): Promise<void> {
    await this.#run(this.#sql.resign(key, term));
  }

  async read(key: LockKey): Promise<Leadership | null> {
    const [row] = await this.#run(this.#sql.read(key));
    if (!row) return null;
    const record = JSON.parse(String(row.record)) as { owner: string; payload: unknown; since: number };
    return {
      owner: record.owner,
      payload: record.payload,
      term: BigInt(String(row.term)),
      since: new Date(record.since),
    };
  }

  async depose(key: LockKey): Promise<boolean> {
    return (await this.#run(this.#sql.depose(key))).length > 0;
  }

  #run(statement: Statement) {
    return this.#options.table.run(() => this.#options.query(statement));
  }
}
