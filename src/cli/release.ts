/** `pglock release <key>`: an operator frees one key (revokeLock). */
import { revokeLock } from "../advisory/revoke.js";
import { ownerLabel } from "../identity.js";
import { keyFormat, parseDuration, parseFlags, parseKey, UsageError } from "./args.js";
import { makePool } from "./connect.js";

/** Exit code when a holder did not let go and --force was not given. */
export const EXIT_STILL_HELD = 1;

export async function release(args: string[], io: { out(line: string): void; error(line: string): void }) {
  const { values, positionals } = parseFlags(args, {
    id: { type: "boolean" },
    pair: { type: "boolean" },
    force: { type: "boolean" },
    grace: { type: "string" },
    "lease-table": { type: "string" },
    database: { type: "string" },
  });
  if (positionals.length !== 1) throw new UsageError("release needs exactly one <key>");
  const key = parseKey(positionals[0] as string, keyFormat(values));
  const graceMs = values.grace === undefined ? undefined : parseDuration(values.grace, "--grace");
  const pool = makePool(values.database, 2);
  try {
    const result = await revokeLock(pool, key, {
      force: values.force === true,
      ...(graceMs === undefined ? {} : { graceMs }),
      ...(values["lease-table"] === undefined ? {} : { leaseTable: values["lease-table"] }),
    });
    if (result.leasesRevoked > 0) io.out(`lease of ${key}: ${result.leasesRevoked} holder(s) removed`);
    for (const pid of result.released) io.out(`session ${pid} let go of ${key}`);
    for (const stuck of result.stuck) {
      const who = `session ${stuck.pid} (${stuck.owner ? ownerLabel(stuck.owner) : (stuck.applicationName ?? "unknown")})`;
      const others = stuck.alsoHolds.length === 0 ? "nothing else" : stuck.alsoHolds.map(String).join(", ");
      if (stuck.ended) io.out(`${who} did not let go: ended it; it also held ${others}`);
      else io.error(`${who} did not let go of ${key}; --force ends that session, which also frees ${others}`);
    }
    if (result.free) {
      if (result.leasesRevoked === 0 && result.released.length === 0 && result.stuck.length === 0) {
        io.out(`${key} is not held`);
      }
      return 0;
    }
    return EXIT_STILL_HELD;
  } finally {
    await pool.end();
  }
}
