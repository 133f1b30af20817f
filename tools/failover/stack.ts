/**
 * A real HA stack on loopback for the failover drills: etcd (v2 API), three PostgreSQL nodes under
 * Patroni, and HAProxy routing to whichever node Patroni's REST API says is the primary
 * (`OPTIONS /primary`). All from Debian's packages (`patroni`, `etcd-server`, `haproxy`) and the
 * machine's PostgreSQL; run as root, with PostgreSQL and Patroni as the `postgres` user.
 *
 * Why etcd's v2 API: with the v3 API, Patroni 3.0.2 let a primary that had been frozen and resumed
 * take leadership back and discard acknowledged writes (patroni/patroni#2689, fixed upstream).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "../throwaway-postgres.js";

export interface Node {
  readonly name: string;
  readonly pgPort: number;
  readonly apiPort: number;
  readonly dataDir: string;
  patroni?: ChildProcess;
}

export interface Stack {
  /** The HA endpoint: HAProxy, which sends connections to the primary. */
  readonly url: string;
  readonly nodes: Node[];
  /** A node's Patroni configuration file (for patronictl). */
  configOf(node: Node): string;
  /** The node Patroni says leads now. */
  leader(): Promise<Node | undefined>;
  /** Starts a node's Patroni again (after a kill). */
  startNode(node: Node): void;
  /** The postmaster's pid of a node. */
  postmasterPid(node: Node): number | undefined;
  stop(): Promise<void>;
}

const PG_BIN = (() => {
  const versions = readdirSync("/usr/lib/postgresql").sort((a, b) => Number(b) - Number(a));
  return `/usr/lib/postgresql/${versions[0]}/bin`;
})();

function id(flag: "-u" | "-g"): number {
  return Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
}

export async function startStack(options: { synchronous: boolean }): Promise<Stack> {
  if (process.getuid?.() !== 0) throw new Error("the failover stack runs as root (Patroni as the postgres user)");
  for (const binary of ["patroni", "etcd", "haproxy"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${binary}`]);
    } catch {
      throw new Error(`the failover drills need ${binary}: apt-get install patroni etcd-server haproxy`);
    }
  }
  const root = mkdtempSync(join(tmpdir(), "pglock-ha-"));
  const [uid, gid] = [id("-u"), id("-g")];
  chownSync(root, uid, gid);
  const children: ChildProcess[] = [];
  // Killed or crashed, the harness must not leave a cluster running.
  process.once("exit", () => {
    for (const child of children) child.kill("SIGKILL");
  });
  const logs = new Map<ChildProcess, string>();
  const launch = (command: string, args: string[], asPostgres: boolean) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(asPostgres ? { uid, gid } : {}),
      env: { ...process.env, HOME: root },
      // Not the checkout: as root it may be a 0700 directory (/root/…) that the postgres user cannot
      // enter, and initdb then fails on its working directory (the bootstrap loops until the 120 s
      // deadline; seen in a CI rehearsal from /root).
      cwd: root,
    });
    let log = "";
    const keep = (chunk: Buffer) => {
      log = (log + chunk).slice(-20_000);
      logs.set(child, log);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    children.push(child);
    return child;
  };

  const [etcdClient, etcdPeer, haPort, statsPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  launch(
    "etcd",
    [
      "--name=pglock-ha",
      `--data-dir=${join(root, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=pglock-ha=http://127.0.0.1:${etcdPeer}`,
      "--enable-v2=true",
    ],
    false,
  );

  const nodes: Node[] = [];
  for (const name of ["pg1", "pg2", "pg3"]) {
    nodes.push({ name, pgPort: await freePort(), apiPort: await freePort(), dataDir: join(root, name) });
  }
  const configOf = (node: Node) => join(root, `${node.name}.yml`);
  for (const node of nodes) {
    const config = {
      scope: "pglock-ha",
      name: node.name,
      restapi: { listen: `127.0.0.1:${node.apiPort}`, connect_address: `127.0.0.1:${node.apiPort}` },
      etcd: { host: `127.0.0.1:${etcdClient}` },
      bootstrap: {
        dcs: {
          ttl: 10,
          loop_wait: 2,
          retry_timeout: 4,
          // A SIGKILLed postmaster is not restarted in place: the cluster fails over.
          primary_start_timeout: 0,
          maximum_lag_on_failover: 1_073_741_824,
          synchronous_mode: options.synchronous,
          synchronous_mode_strict: options.synchronous,
          postgresql: {
            use_pg_rewind: true,
            parameters: {
              wal_level: "replica",
              hot_standby: "on",
              wal_log_hints: "on",
              max_wal_senders: 10,
            },
          },
        },
        initdb: [{ encoding: "UTF8" }, { locale: "C" }],
        pg_hba: ["host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"],
      },
      postgresql: {
        listen: `127.0.0.1:${node.pgPort}`,
        connect_address: `127.0.0.1:${node.pgPort}`,
        data_dir: node.dataDir,
        bin_dir: PG_BIN,
        pgpass: join(root, `${node.name}.pgpass`),
        authentication: {
          superuser: { username: "postgres", password: "ha" },
          replication: { username: "replicator", password: "ha" },
          rewind: { username: "postgres", password: "ha" },
        },
        parameters: { unix_socket_directories: root, max_connections: 200 },
      },
    };
    // JSON is YAML.
    writeFileSync(configOf(node), JSON.stringify(config, null, 2));
    chownSync(configOf(node), uid, gid);
  }
  const startNode = (node: Node) => {
    node.patroni = launch("patroni", [configOf(node)], true);
  };
  for (const node of nodes) startNode(node);

  const haConfig = join(root, "haproxy.cfg");
  writeFileSync(
    haConfig,
    [
      "global",
      "  maxconn 1000",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 30m",
      "  timeout server 30m",
      "  timeout check 1s",
      `listen primary`,
      `  bind 127.0.0.1:${haPort}`,
      "  option httpchk OPTIONS /primary",
      "  http-check expect status 200",
      // Connections to a node that stops being the primary are cut, as a real deployment should.
      "  default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions",
      ...nodes.map((node) => `  server ${node.name} 127.0.0.1:${node.pgPort} maxconn 500 check port ${node.apiPort}`),
      `listen stats`,
      `  bind 127.0.0.1:${statsPort}`,
      "  mode http",
      "  stats enable",
      "",
    ].join("\n"),
  );
  launch("haproxy", ["-f", haConfig, "-db"], false);

  const leader = async (): Promise<Node | undefined> => {
    for (const node of nodes) {
      try {
        const response = await fetch(`http://127.0.0.1:${node.apiPort}/primary`, {
          method: "OPTIONS",
          signal: AbortSignal.timeout(1_000),
        });
        if (response.status === 200) return node;
      } catch {}
    }
    return undefined;
  };
  const url = `postgres://postgres:ha@127.0.0.1:${haPort}/postgres`;
  const stack: Stack = {
    url,
    nodes,
    configOf,
    leader,
    startNode,
    postmasterPid(node) {
      try {
        return Number(readFileSync(join(node.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
      } catch {
        return undefined;
      }
    },
    async stop() {
      for (const child of children) child.kill("SIGKILL");
      // Every process started from this stack's directory: postmasters (one may be restarting, with
      // no pid file yet) and their backends.
      for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(root)) process.kill(Number(pid), "SIGKILL");
        } catch {}
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
      rmSync(root, { recursive: true, force: true });
    },
  };
  // Cold start: a leader and two streaming replicas; after 60 s, one replica will do (seen once: a node
  // that led first was demoted at bootstrap and still rejoining 90 s later).
  const started = Date.now();
  const deadline = started + 120_000;
  for (;;) {
    const replicas = await Promise.all(
      nodes.map(async (node) => {
        try {
          const response = await fetch(`http://127.0.0.1:${node.apiPort}/replica`, {
            signal: AbortSignal.timeout(1_000),
          });
          return response.status === 200;
        } catch {
          return false;
        }
      }),
    );
    const ready = replicas.filter(Boolean).length;
    if (
      (await leader()) &&
      (ready === 2 || (ready === 1 && Date.now() - started > 60_000)) &&
      (await writableThrough(url))
    ) {
      break;
    }
    if (Date.now() > deadline) {
      const tail = [...logs.values()].map((log) => log.split("\n").slice(-8).join("\n")).join("\n---\n");
      await stack.stop();
      throw new Error(`the HA stack did not come up within 120 s:\n${tail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return stack;
}

/**
 * Whether a write goes through HAProxy now. Patroni can name a leader before HAProxy's health check
 * has marked it up, and until then HAProxy accepts a connection and closes it ("Connection terminated
 * unexpectedly": a CI run's drill setup failed so, on a stack that Patroni called ready).
 */
async function writableThrough(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    const { rows } = await client.query<{ recovery: boolean }>("SELECT pg_is_in_recovery() AS recovery");
    return rows[0]?.recovery === false;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}
