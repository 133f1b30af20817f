// A process whose pg.Pool gets a connection that fails while pg-pool hands it over (issue #13's chaos
// crash): a proxy holds the server's bytes after authentication back until the backend has been
// terminated, then passes them on in one write, so the startup's ReadyForQuery and the FATAL arrive in
// one socket read.
// Prints what each checkout settled with; a crash exits 1 with "Unhandled 'error' event".
import { connect, createServer, type Socket } from "node:net";
import pg from "pg";
import { createLocker } from "pglock";

const url = new URL(process.env.DATABASE_URL as string);
const direct = new pg.Pool({ connectionString: url.href, max: 1 });
const upstreams: Socket[] = [];
const releases: (() => void)[] = [];
const proxy = createServer((client) => {
  const server = connect(Number(url.port || 5432), url.hostname);
  upstreams.push(server);
  // The authentication exchange passes (a password needs the client's answers); from the message after
  // AuthenticationOk on, the server's bytes are held: the rest of the startup and what follows it.
  let pending = Buffer.alloc(0);
  let holding = false;
  let released = false;
  server.on("data", (chunk: Buffer) => {
    if (released) return void client.write(chunk);
    pending = Buffer.concat([pending, chunk]);
    while (!holding && pending.length >= 5) {
      const length = 1 + pending.readInt32BE(1);
      if (pending.length < length) break;
      const message = pending.subarray(0, length);
      pending = pending.subarray(length);
      client.write(message);
      holding = message[0] === 0x52 && length === 9 && message.readInt32BE(5) === 0; // 'R', AuthenticationOk
    }
  });
  releases.push(() => {
    released = true;
    client.write(pending);
  });
  client.on("data", (chunk) => server.write(chunk));
  client.on("error", () => {});
  server.on("error", () => {});
  client.on("close", () => server.destroy());
  server.on("close", () => released && client.end());
});
await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const proxied = new URL(url.href);
proxied.hostname = "127.0.0.1";
proxied.port = String((proxy.address() as { port: number }).port);
const pool = new pg.Pool({ connectionString: proxied.href, max: 2 });
pool.on("error", () => {});

/** Terminates the proxied backend once its startup is done, then lets its bytes through in one write. */
async function failDuringHandover(index: number) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`the proxied backend ${index} never became idle`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const upstream = upstreams[index];
    if (upstream?.localPort === undefined) continue;
    const { rows } = await direct.query("SELECT pid FROM pg_stat_activity WHERE client_port = $1 AND state = 'idle'", [
      upstream.localPort,
    ]);
    if (rows.length === 0) continue;
    // Listen before terminating: the socket may close before the terminate's answer is read.
    const closed = new Promise<void>((resolve) => upstream.once("close", () => resolve()));
    await direct.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
    await closed;
    releases[index]?.();
    return;
  }
}

// pglock's own checkout (a Locker's session).
const locker = createLocker(pool);
const acquired = locker.acquire(`handover-${process.pid}`).then(
  () => "granted",
  (error: { code?: string }) => `rejected ${error.code}`,
);
await failDuringHandover(0);
console.log(`locker: ${await acquired}`);

// The application's own checkout from the same pool.
const checkedOut = pool.connect();
await failDuringHandover(1);
const client = await checkedOut;
client.on("error", () => {});
console.log(
  `own checkout: ${await client.query("SELECT 1").then(
    () => "usable",
    () => "query failed",
  )}`,
);
client.release(true);

await locker.close();
await Promise.all([pool.end(), direct.end()]);
proxy.close();
