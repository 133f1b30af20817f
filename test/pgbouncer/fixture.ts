/**
 * PgBouncer in front of a throwaway PostgreSQL, in session or transaction pooling. Needs the
 * `pgbouncer` executable (Debian: apt-get install pgbouncer); it refuses to run as root, so as root
 * it runs as the `postgres` user.
 */
import { spawn, spawnSync } from "node:child_process";
import { chmod, chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../tools/throwaway-postgres.js";

export interface PgBouncer {
  url: string;
  stop(): Promise<void>;
}

export async function startPgBouncer(serverUrl: string, mode: "session" | "transaction"): Promise<PgBouncer> {
  const server = new URL(serverUrl);
  const dir = await mkdtemp(join(tmpdir(), "pglock-pgbouncer-"));
  await chmod(dir, 0o755);
  const port = await freePort();
  await writeFile(join(dir, "users.txt"), '"postgres" ""\n');
  await writeFile(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `postgres = host=127.0.0.1 port=${server.port} dbname=postgres user=postgres password=${decodeURIComponent(server.password)}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${join(dir, "users.txt")}`,
      `pool_mode = ${mode}`,
      "default_pool_size = 2",
      "max_client_conn = 200",
      // Most recently used server connection first: what makes the transaction-pooling test deterministic.
      "server_round_robin = 0",
      "ignore_startup_parameters = extra_float_digits,options",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  const owner = process.getuid?.() === 0 ? postgresUser() : undefined;
  if (owner) {
    for (const file of ["", "users.txt", "pgbouncer.ini"]) await chown(join(dir, file), owner.uid, owner.gid);
  }
  // cwd: its own directory, which the postgres user can enter (a root checkout may be 0700).
  const child = spawn("pgbouncer", [join(dir, "pgbouncer.ini")], { stdio: "ignore", cwd: dir, ...(owner ?? {}) });
  let spawnError: Error | undefined;
  child.on("error", (error) => {
    spawnError = error; // e.g. not installed: reported below, never an unhandled 'error' event
  });
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await listening(port))) {
    if (spawnError) {
      throw new Error(`could not run pgbouncer (${spawnError.message}): install it, e.g. apt-get install pgbouncer`);
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`pgbouncer did not start on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      child.kill("SIGINT");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function postgresUser() {
  const uid = Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout.trim());
  const gid = Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim());
  return { uid, gid };
}
