/** The `pglock` command: run a program under a lock, list or free locks, hash a name, or watch a demo. Started by bin.ts. */
import { readFileSync } from "node:fs";
import { hashKey, lockKey } from "../key.js";
import { lockTag } from "../sql/advisory.js";
import { parseFlags, UsageError } from "./args.js";
import { describeFailure, EXIT_MISSING_PG, MissingPgError } from "./connect.js";
import { demo } from "./demo.js";
import { ls } from "./ls.js";
import { release } from "./release.js";
import { EXIT_BUSY, EXIT_LOST, EXIT_UNAVAILABLE, run } from "./run.js";

const USAGE = `Usage: pglock <command> [options]

Distributed locks on PostgreSQL advisory locks.

Commands:
  run <key> [options] -- <command> [args…]   run a command while holding the lock
  ls [--key <key>] [--json | --watch]        list locks, leases and leaders: holders, waiters, who waits for whom
  release <key> [--force]                    free one key: ask its holder to let go (or end its session)
  key <name>                                 the int64 a name hashes to, and how to find it in pg_locks
  demo                                       workers, a leader election and a semaphore at work

Connection: --database <url>, else DATABASE_URL, else the libpq PG* variables.
Run \`pglock <command> --help\` for a command's options; \`pglock --version\` for the version.`;

const HELP: Record<string, string> = {
  run: `Usage: pglock run <key> [--shared] [--wait | --timeout <duration> | --no-wait] [options] -- <command> [args…]

Holds the lock while the command runs and exits with the command's exit code. The command runs in a
process group of its own: SIGINT, SIGTERM, SIGHUP and SIGQUIT go to the whole group (the children of
sh -c or npm run too), and so does the stop after a lost lock or pglock's own death. The lock is
released when the command ends, however it ends.

  <key>                      a name (hashed with FNV-1a 64, as the library does)
  --id                       <key> is an int64, e.g. 42 or -7671976228194938313 (also --id=<key>)
  --pair                     <key> is a pair of int32, e.g. 12,34 or -1,2 (also --pair=<key>)
  --shared                   take the lock shared (shared holders coexist)
  --wait                     wait until the lock is free (the default)
  --timeout <duration>       wait at most this long, connecting included (500ms, 10s, 2m; a bare
                             number is seconds; 0 is --no-wait)
  --no-wait                  do not wait: if the lock is busy, run nothing
  --busy-exit-code <n>       exit code when the lock is busy or the timeout passes (default ${EXIT_BUSY})
  --lost-exit-code <n>       exit code when the lock was lost while the command ran (default ${EXIT_LOST})
  --at-least <duration>      the key stays taken until this long after the grant, by the server's
                             clock, even after the command ends: a cron job on several servers
                             runs once per tick (the run is kept in the lease table)
  --at-most <duration>       stop the command (as after a lost lock) once it has run this long
  --kill-after <duration>    after a lost lock or --at-most, SIGTERM, then SIGKILL after this long (default 10s)
  --database <url>           the database (default: DATABASE_URL, then PG* variables)

Exit codes: the command's own; ${EXIT_BUSY} busy; ${EXIT_LOST} lock lost or --at-most passed (the command was stopped);
${EXIT_UNAVAILABLE} database unreachable; ${EXIT_MISSING_PG} the pg package is missing; 2 usage; 127 command not found; 128+n killed by signal n.

Examples:
  pglock run nightly-report --no-wait --at-least 10m -- ./report.sh
                                                         once per night, on one of several cron servers
  pglock run migrations --timeout 2m -- npm run migrate  one instance migrates, the others wait`,
  ls: `Usage: pglock ls [--key <key> [--id | --pair]] [--json | --watch [--interval <duration>]] [--lease-table <name>] [--database <url>]

Lists the advisory locks of the database, held and awaited: the key (with its name when this command
hashed it: a hash cannot be reversed), mode, state, backend pid, owner (host:process@nonce locker-n or
lock-n, for sessions pglock opened), application, client, and for waiters how long they have waited
(PostgreSQL 14+) and the pids they wait for. Then who waits for whom: each waiter, the holder it
waits for, and what that holder is known to wait for in turn; a queue of waiters reads as a queue,
and a cycle (a deadlock) is marked. Then the leases (holder, expiry, token) and the elections
(leader, term, payload) of the lease table, when there are any.

  --json                     the same as JSON: one array, each entry with its "kind"
                             ("advisory", "lease" or "leader")
  --lease-table <name>       the lease table (default pglock_leases)
  --watch                    redraw every second until Ctrl-C; a holder's time is how long this
                             view has seen it hold (PostgreSQL does not record when a lock was granted)
  --interval <duration>      with --watch, how often to redraw (default 1s)`,
  release: `Usage: pglock release <key> [--id | --pair] [--grace <duration>] [--force] [--lease-table <name>] [--database <url>]

Frees one key without ending anything else. A lease's holders are removed at once (each is told at its
next renewal). A session that holds the key is asked to let go: a pglock Locker aborts that handle's
signal with RevokedError (ERR_PGLOCK_REVOKED) and releases the key, and keeps its other locks.

  --grace <duration>         how long a holder has to let go (default 5s)
  --force                    end the session of a holder that did not let go in time; this prints
                             what else that session held, since it is freed too
  --lease-table <name>       the lease table (default pglock_leases)

Exit codes: 0 the key is free; 1 a holder did not let go (without --force); 2 usage; ${EXIT_UNAVAILABLE} database unreachable.`,
  key: `Usage: pglock key <name>

Prints the int64 key a name hashes to (FNV-1a 64, the same as go-pglock's hashToInt64) and the SQL
that finds it in pg_locks.`,
  demo: `Usage: pglock demo [--database <url>]

Shows several workers, a leader election and a semaphore at work on the database given by
--database, DATABASE_URL or the PG* variables (a usage error, exit 2, without one).`,
};

/**
 * Output through the process's streams, not console.log: Bun's console writes to the file descriptor
 * directly, so a reader that stops reading (`pglock ls --watch | head`) would go unnoticed (bin.ts
 * ends on the stream's EPIPE).
 */
const STD_IO: CommandIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  error: (line) => void process.stderr.write(`${line}\n`),
};

/** Where the command's lines go. */
export interface CommandIo {
  out(line: string): void;
  error(line: string): void;
}

export async function main(argv: string[], io: CommandIo = STD_IO): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined) throw new UsageError("a command is missing");
    if (command === "--help" || command === "-h" || command === "help") {
      io.out(USAGE);
      return 0;
    }
    if (command === "--version" || command === "-v") {
      io.out(version());
      return 0;
    }
    if (!(command in HELP)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    const beforeCommand = command === "run" && rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
    if (beforeCommand.includes("--help") || beforeCommand.includes("-h")) {
      io.out(HELP[command] as string);
      return 0;
    }
    switch (command) {
      case "run":
        return await run(rest, io);
      case "ls":
        return await ls(rest, io);
      case "key":
        return keyCommand(rest, io);
      case "release":
        return await release(rest, io);
      default:
        return await demo(rest, io);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.error(`pglock: ${error.message}\n\n${command && command in HELP ? HELP[command] : USAGE}`);
      return 2;
    }
    if (error instanceof MissingPgError) {
      io.error(`pglock: ${error.message}`);
      return EXIT_MISSING_PG;
    }
    io.error(`pglock: ${describeFailure(error)}`);
    return EXIT_UNAVAILABLE;
  }
}

function keyCommand(args: string[], io: { out(line: string): void }): number {
  const { positionals } = parseFlags(args, {});
  if (positionals.length !== 1) throw new UsageError("key needs exactly one <name>");
  const name = positionals[0] as string;
  const id = hashKey(name);
  const [classid, objid] = lockTag(lockKey(id));
  io.out(String(id));
  io.out(
    `-- find it in pg_locks:\nSELECT * FROM pg_locks WHERE locktype = 'advisory' AND classid = ${classid} AND objid = ${objid} AND objsubid = 1;`,
  );
  return 0;
}

function version(): string {
  // dist/cli.mjs and src/cli/bin.ts both find the package manifest by walking up.
  for (const path of ["../package.json", "../../package.json"]) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8"));
      if (manifest.name === "pglock") return manifest.version;
    } catch {}
  }
  return "unknown";
}
