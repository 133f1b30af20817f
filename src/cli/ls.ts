/** `pglock ls`: the advisory locks on the server, as a table or JSON. */
import { type AdvisoryLockInfo, inspectLocks } from "../patterns/inspect.js";
import { keyFormat, parseFlags, parseKey, UsageError } from "./args.js";
import { makePool } from "./connect.js";

export async function ls(args: string[], io: { out(line: string): void }): Promise<number> {
  const { values, positionals } = parseFlags(args, {
    key: { type: "string" },
    json: { type: "boolean" },
    id: { type: "boolean" },
    pair: { type: "boolean" },
    database: { type: "string" },
  });
  if (positionals.length > 0) throw new UsageError(`ls takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const key = values.key === undefined ? undefined : parseKey(values.key, keyFormat(values));
  const pool = makePool(values.database, 1);
  try {
    const locks = await inspectLocks(pool, key ? { key } : {});
    if (values.json) io.out(JSON.stringify(locks.map(toJson), null, 2));
    else io.out(table(locks));
    return 0;
  } finally {
    await pool.end();
  }
}

function toJson(lock: AdvisoryLockInfo) {
  return {
    key: lock.key.pair ? [...lock.key.pair] : String(lock.key.id),
    mode: lock.mode,
    granted: lock.granted,
    pid: lock.pid,
    user: lock.user,
    applicationName: lock.applicationName,
    clientAddress: lock.clientAddress,
    waitingSince: lock.waitingSince?.toISOString() ?? null,
  };
}

function table(locks: AdvisoryLockInfo[]): string {
  if (locks.length === 0) return "no advisory locks";
  const header = ["KEY", "MODE", "STATE", "PID", "APPLICATION", "CLIENT", "WAITING SINCE"];
  const rows = locks.map((lock) => [
    lock.key.pair ? `${lock.key.pair[0]},${lock.key.pair[1]}` : String(lock.key.id),
    lock.mode,
    lock.granted ? "held" : "waiting",
    String(lock.pid),
    lock.applicationName ?? "",
    lock.clientAddress ?? "local",
    lock.waitingSince?.toISOString() ?? "",
  ]);
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
