/** `pglock ls`: the advisory locks on the server, as a table, as JSON, or as a live view (`--watch`). */

import {
  type AdvisoryLockInfo,
  inspectLeaders,
  inspectLeases,
  inspectLocks,
  type LeaderInfo,
  type LeaseInfo,
} from "../advisory/inspect.js";
import { ownerLabel } from "../identity.js";
import type { LockKey } from "../key.js";
import { sleep } from "../signals.js";
import { waitChains } from "../waits.js";
import { keyFormat, parseDuration, parseFlags, parseKey, UsageError } from "./args.js";
import { describeFailure, makePool } from "./connect.js";

export interface LsOutput {
  out(line: string): void;
}

export async function ls(args: string[], io: LsOutput): Promise<number> {
  const { values, positionals } = parseFlags(args, {
    key: { type: "string" },
    json: { type: "boolean" },
    id: { type: "boolean" },
    pair: { type: "boolean" },
    watch: { type: "boolean" },
    interval: { type: "string" },
    "lease-table": { type: "string" },
    database: { type: "string" },
  });
  if (positionals.length > 0) throw new UsageError(`ls takes no arguments, got ${JSON.stringify(positionals[0])}`);
  if (values.watch && values.json) throw new UsageError("--watch and --json do not go together");
  if (values.interval !== undefined && !values.watch) throw new UsageError("--interval goes with --watch");
  const intervalMs = values.interval === undefined ? 1_000 : parseDuration(values.interval, "--interval");
  if (intervalMs < 100) throw new UsageError(`--interval ${values.interval} is too short: at least 100ms`);
  const key = values.key === undefined ? undefined : parseKey(values.key, keyFormat(values));
  const leaseTable = values["lease-table"];
  const pool = makePool(values.database, 3);
  try {
    const only = { ...(key ? { key } : {}), ...(leaseTable === undefined ? {} : { table: leaseTable }) };
    const read = async (): Promise<View> => {
      const [locks, leases, leaders] = await Promise.all([
        inspectLocks(pool, key ? { key } : {}),
        inspectLeases(pool, only),
        inspectLeaders(pool, only),
      ]);
      return { locks, leases, leaders };
    };
    if (values.watch) return await watch(read, intervalMs, io);
    const view = await read();
    io.out(values.json ? JSON.stringify(toJson(view), null, 2) : render(view));
    return 0;
  } finally {
    await pool.end();
  }
}

/**
 * Redraws the view every interval until SIGINT (Ctrl-C) or SIGTERM, then exits 0. PostgreSQL does not
 * record when a lock was granted: a holder's time is how long this view has seen it hold the lock.
 * A failed read shows in the view and the next one is tried; the view does not end on it.
 */
async function watch(read: () => Promise<View>, intervalMs: number, io: LsOutput): Promise<number> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const firstSeen = new Map<string, number>();
  try {
    while (!stop.signal.aborted) {
      let body: string;
      try {
        const view = await read();
        const locks = view.locks;
        const now = Date.now();
        const seen = new Map<string, number>();
        for (const lock of locks) {
          if (!lock.granted) continue;
          const id = `${lock.pid} ${lock.key.identity} ${lock.mode}`;
          seen.set(id, firstSeen.get(id) ?? now);
        }
        firstSeen.clear();
        for (const [id, since] of seen) firstSeen.set(id, since);
        body = render(view, (lock) => {
          const since = firstSeen.get(`${lock.pid} ${lock.key.identity} ${lock.mode}`);
          return since === undefined ? "" : `>=${seconds(now - since)}`;
        });
      } catch (error) {
        body = `cannot read the locks: ${describeFailure(error)}`;
      }
      // On a terminal: home and clear the screen (ECMA-48 CUP and ED), then the frame. Into a pipe or
      // a file, frames follow one another, without escape codes (issue #26).
      const clear = process.stdout.isTTY ? "\x1b[H\x1b[2J" : "\n";
      io.out(`${clear}${new Date().toISOString()}  pglock ls --watch  (Ctrl-C to quit)\n\n${body}`);
      // Ctrl-C ends the pause early: the loop then sees the stop and returns.
      await sleep(intervalMs, stop.signal).catch(() => {});
    }
    return 0;
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

/** What ls shows: the advisory locks, the leases and the elections. */
interface View {
  locks: AdvisoryLockInfo[];
  leases: LeaseInfo[];
  leaders: LeaderInfo[];
}

/** One array, each entry with its `kind`: "advisory", "lease" or "leader". */
function toJson(view: View) {
  return [
    ...view.locks.map(advisoryJson),
    ...view.leases.map((lease) => ({
      kind: "lease",
      key: keyJson(lease.key),
      mode: lease.mode,
      holder: lease.holder,
      run: lease.run,
      expiresInMs: lease.expiresInMs,
      token: String(lease.token),
    })),
    ...view.leaders.map((leader) => ({
      kind: "leader",
      key: keyJson(leader.key),
      owner: leader.owner,
      payload: leader.payload,
      term: String(leader.term),
      since: leader.since.toISOString(),
      endsInMs: leader.endsInMs,
    })),
  ];
}

function keyJson(key: LockKey) {
  return key.pair ? [...key.pair] : String(key.id);
}

function advisoryJson(lock: AdvisoryLockInfo) {
  return {
    kind: "advisory",
    key: keyJson(lock.key),
    name: lock.key.name ?? null,
    mode: lock.mode,
    granted: lock.granted,
    pid: lock.pid,
    owner: lock.owner,
    user: lock.user,
    applicationName: lock.applicationName,
    clientAddress: lock.clientAddress,
    waitingSince: lock.waitingSince?.toISOString() ?? null,
    waitingMs: lock.waitingMs,
    waitingFor: lock.waitingFor,
  };
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
}

/** The advisory locks, then the leases and the elections when there are any. */
function render(view: View, heldFor?: (lock: AdvisoryLockInfo) => string): string {
  const parts = [table(view.locks, heldFor)];
  if (view.leases.length > 0) {
    parts.push(
      "LEASES",
      columns(
        ["KEY", "MODE", "HOLDER", "EXPIRES IN", "TOKEN"],
        view.leases.map((lease) => [
          keyText(lease.key),
          lease.mode,
          lease.run ? "(a run's atLeastMs)" : lease.holder,
          seconds(lease.expiresInMs),
          String(lease.token),
        ]),
      ),
    );
  }
  if (view.leaders.length > 0) {
    parts.push(
      "LEADERS",
      columns(
        ["KEY", "LEADER", "TERM", "SINCE", "TERM ENDS IN", "PAYLOAD"],
        view.leaders.map((leader) => [
          keyText(leader.key),
          leader.owner,
          String(leader.term),
          leader.since.toISOString(),
          seconds(leader.endsInMs),
          leader.payload === null ? "" : JSON.stringify(leader.payload),
        ]),
      ),
    );
  }
  return parts.join("\n\n");
}

function keyText(key: LockKey): string {
  return key.pair ? `${key.pair[0]},${key.pair[1]}` : key.toString();
}

/** Rows under a header, each column as wide as its widest cell. */
function columns(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] as string).length)));
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] as number))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/**
 * The locks as a table, then who waits for whom. `heldFor` says how long a holder has held, where
 * the caller knows (the live view); a waiter's time is the server's own.
 */
function table(locks: AdvisoryLockInfo[], heldFor: (lock: AdvisoryLockInfo) => string = () => ""): string {
  if (locks.length === 0) return "no advisory locks";
  const header = ["KEY", "MODE", "STATE", "FOR", "PID", "OWNER", "APPLICATION", "CLIENT", "WAITS FOR"];
  const rows = locks.map((lock) => [
    keyText(lock.key),
    lock.mode,
    lock.granted ? "held" : "waiting",
    lock.granted ? heldFor(lock) : lock.waitingMs === null ? "" : seconds(lock.waitingMs),
    String(lock.pid),
    lock.owner ? ownerLabel(lock.owner) : "",
    lock.owner?.application ?? lock.applicationName ?? "",
    lock.clientAddress ?? "local",
    lock.waitingFor.join(","),
  ]);
  const lines = [columns(header, rows)];
  const chains = waitChains(locks);
  if (chains.length > 0) lines.push("", "WHO WAITS FOR WHOM", ...chains.map((chain) => `  ${chain}`));
  return lines.join("\n");
}
