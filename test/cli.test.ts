import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocker, hashKey, inspectLocks, type Locker } from "pglock";
import { afterEach, describe, expect, it } from "vitest";
import { databaseUrl, eventually, locksOnKey, makePool, sleep, uniqueName } from "./support/db.js";
import { program, run } from "./support/run.js";

// The real executable, from source (the same file the bin is built from), on this suite's runtime.
const [PGLOCK, PGLOCK_ARGS] = program("src/cli/bin.ts");
const pglock = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(PGLOCK, [...PGLOCK_ARGS, ...args], { DATABASE_URL: databaseUrl(), ...env });
const started: ChildProcess[] = [];
function start(args: string[]) {
  const child = spawn(PGLOCK, [...PGLOCK_ARGS, ...args], {
    env: { ...process.env, DATABASE_URL: databaseUrl() },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  started.push(child);
  return { child, exited, output: () => ({ stdout, stderr }) };
}
const lockers: Locker[] = [];
afterEach(async () => {
  for (const child of started.splice(0)) child.kill("SIGKILL");
  await Promise.all(lockers.splice(0).map((locker) => locker.close()));
});

let admin: ReturnType<typeof makePool> | undefined;
/** One pool for every poll of the file (a pool per poll ran out of connections). */
const adminPool = () => {
  admin ??= makePool({ max: 2 });
  return admin;
};

async function heldBy(name: string) {
  return (await locksOnKey(adminPool(), hashKey(name))).filter((row) => row.granted);
}

describe("pglock run", () => {
  it("two runs on one key take turns", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pglock-cli-"));
    const log = join(dir, "log");
    const name = uniqueName("cli");
    const script = `echo start $$ >> ${log}; sleep 0.3; echo end $$ >> ${log}`;
    const [a, b] = await Promise.all([
      pglock(["run", name, "--", "sh", "-c", script]),
      pglock(["run", name, "--", "sh", "-c", script]),
    ]);
    expect([a.code, b.code]).toEqual([0, 0]);
    const lines = readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .map((line) => line.split(" ")[0]);
    rmSync(dir, { recursive: true, force: true });
    expect(lines).toEqual(["start", "end", "start", "end"]);
  });

  it("--no-wait exits 75 and runs nothing while another holds the key; --busy-exit-code changes it", async () => {
    const name = uniqueName("cli");
    const locker = createLocker(makePool());
    lockers.push(locker);
    await locker.acquire(name);
    const busy = await pglock(["run", name, "--no-wait", "--", "echo", "ran"]);
    expect(busy.code).toBe(75);
    expect(busy.stdout).toBe("");
    expect(busy.stderr).toMatch(/is busy/);
    expect((await pglock(["run", name, "--no-wait", "--busy-exit-code", "9", "--", "true"])).code).toBe(9);
    const timedOut = await pglock(["run", name, "--timeout", "200ms", "--", "true"]);
    expect(timedOut.code).toBe(75);
    expect(timedOut.stderr).toMatch(/not acquired within 200ms/);
  });

  it("--at-least keeps a finished run's key taken across processes; --at-most stops a command that runs too long", async () => {
    // Three cron servers whose timers fire 0.3 s apart, a job of a moment: one run, not three (issue #25).
    const name = uniqueName("cli-cron");
    const runs = await Promise.all(
      [0, 300, 600].map((delay) =>
        sleep(delay).then(() => pglock(["run", name, "--no-wait", "--at-least", "30s", "--", "echo", "ran"])),
      ),
    );
    expect(runs.map((r) => r.code).sort()).toEqual([0, 75, 75]);
    expect(runs.map((r) => r.stdout).join("")).toBe("ran\n");
    // Once the run's time is up, by the server's clock, the next tick runs. (The grant was before the
    // first run ended: 10.5 s after its end is past its 10 s.)
    const next = uniqueName("cli-cron-next");
    const first = await pglock(["run", next, "--no-wait", "--at-least", "10s", "--", "true"]);
    const firstEnded = performance.now();
    expect(first.code).toBe(0);
    expect((await pglock(["run", next, "--no-wait", "--at-least", "10s", "--", "true"])).code).toBe(75);
    await sleep(Math.max(0, 10_500 - (performance.now() - firstEnded)));
    expect((await pglock(["run", next, "--no-wait", "--at-least", "10s", "--", "true"])).code).toBe(0);

    const long = uniqueName("cli-at-most");
    const stuck = await pglock(["run", long, "--at-most", "500ms", "--kill-after", "1s", "--", "sleep", "30"]);
    expect(stuck.code).toBe(70);
    expect(stuck.stderr).toMatch(/the command ran past --at-most 500ms; stopping it/);
    expect((await pglock(["run", long, "--no-wait", "--", "true"])).code).toBe(0);
    expect((await pglock(["run", long, "--shared", "--at-least", "1s", "--", "true"])).code).toBe(2);
    expect((await pglock(["run", long, "--at-least", "2s", "--at-most", "1s", "--", "true"])).code).toBe(2);
  });

  it("exits with the command's exit code and takes --id and --pair keys", async () => {
    expect((await pglock(["run", "--id", "424242", "--", "sh", "-c", "exit 7"])).code).toBe(7);
    const pair = await pglock(["run", "--pair", "12,34", "--", "echo", "ok"]);
    expect(pair).toMatchObject({ code: 0, stdout: "ok\n" });
    expect((await pglock(["run", uniqueName(), "--", "no-such-command-pglock"])).code).toBe(127);
  });

  it("a SIGKILLed pglock run frees the key", async () => {
    const name = uniqueName("cli");
    const { child } = start(["run", name, "--", "sleep", "30"]);
    await eventually(async () => (await heldBy(name)).length === 1);
    child.kill("SIGKILL");
    await eventually(async () => (await heldBy(name)).length === 0);
    expect((await pglock(["run", name, "--no-wait", "--", "true"])).code).toBe(0);
  });

  it("SIGTERM and SIGINT go to the command; the lock is released when it ends", async () => {
    const name = uniqueName("cli");
    for (const [signal, expected] of [
      ["SIGTERM", "TERM"],
      ["SIGINT", "INT"],
    ] as const) {
      const script = `trap 'echo got ${expected}; exit 3' ${expected}; echo ready; while true; do sleep 0.05; done`;
      const { child, exited, output } = start(["run", name, "--", "sh", "-c", script]);
      await eventually(() => output().stdout.includes("ready"));
      // process.kill: Deno reports a child it kill()ed as killed by the signal, whatever it exited with.
      process.kill(child.pid as number, signal);
      expect(await exited).toBe(3);
      expect(output().stdout).toContain(`got ${expected}`);
      expect(await heldBy(name)).toEqual([]);
    }
  });

  it("a lock lost while the command runs stops it and says so", async () => {
    const name = uniqueName("cli");
    const admin = makePool({ max: 1 });
    const { exited, output } = start([
      "run",
      name,
      "--kill-after",
      "2s",
      "--",
      "sh",
      "-c",
      "echo running; exec sleep 30",
    ]);
    // Once the command runs, not once pg_locks shows the lock: a session ended between the server's
    // grant and pglock's is no grant, and pglock takes the key again on a new session (a CI matrix run
    // under load terminated that first session, and the command then ran its 30 s under the new one).
    await eventually(() => output().stdout.includes("running"), 20_000);
    await eventually(async () => (await heldBy(name)).length === 1);
    const [holder] = await heldBy(name);
    await admin.query("SELECT pg_terminate_backend($1)", [holder?.pid]);
    expect(await exited).toBe(70);
    expect(output().stderr).toMatch(/the lock was lost while the command ran/);
  });
});

describe("pglock ls, key, help", () => {
  it("ls shows a held lock and its waiter, as a table and as JSON", async () => {
    const name = uniqueName("cli");
    const app = uniqueName();
    const holder = createLocker(makePool(), { applicationName: app });
    const waiter = createLocker(makePool(), { applicationName: app });
    lockers.push(holder, waiter);
    const held = await holder.acquire(name);
    const waiting = waiter.acquire(name, { timeout: 20_000 });
    await eventually(async () => (await inspectLocks(adminPool(), { key: name })).length === 2);
    // The waiter's wait is sliced (it goes back into the server's queue every deadlock_timeout +
    // 0.5–1.5 s): read in that instant, it waits for nobody, or is not there. Read again then (a CI
    // matrix run under load saw it once).
    const settled = (stdout: string) => /\swaiting\s.*\s\d+$/m.test(stdout) && stdout.includes("WHO WAITS FOR WHOM");
    let table = await pglock(["ls", "--key", name]);
    for (let attempt = 0; attempt < 5 && !settled(table.stdout); attempt++) table = await pglock(["ls", "--key", name]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^KEY\s+MODE\s+STATE\s+FOR\s+PID\s+OWNER\s+APPLICATION\s+CLIENT\s+WAITS FOR$/);
    // The command hashed the name itself, so it shows it; the owner is this test process's Lockers.
    const key = `${JSON.stringify(name)} \\(${hashKey(name)}\\)`;
    const owner = `\\S+:${process.pid}@[0-9a-f]{8} locker-\\d+`;
    const holderRow = new RegExp(`^${key}\\s+exclusive\\s+held\\s+(\\d+)\\s+${owner}\\s+${app}\\s+\\S+$`);
    const holderPid = holderRow.exec(lines[1] as string)?.[1];
    expect(holderPid).toBeDefined();
    expect(lines[2], table.stdout).toMatch(
      new RegExp(
        `^${key}\\s+exclusive\\s+waiting\\s+(\\d+\\.\\ds\\s+)?\\d+\\s+${owner}\\s+${app}\\s+\\S+\\s+${holderPid}$`,
      ),
    );
    expect(lines.slice(3)).toEqual([
      "",
      "WHO WAITS FOR WHOM",
      expect.stringMatching(
        new RegExp(`^  ${owner} \\(pid \\d+\\) waits for ${key} held by ${owner} \\(pid ${holderPid}\\)$`),
      ),
    ]);
    let json = JSON.parse((await pglock(["ls", "--key", name, "--json"])).stdout);
    for (let attempt = 0; attempt < 5 && json[1]?.waitingFor?.length !== 1; attempt++) {
      json = JSON.parse((await pglock(["ls", "--key", name, "--json"])).stdout);
    }
    expect(
      json.map((row: { granted: boolean; key: string; name: string; owner: { processId: number } }) => [
        row.key,
        row.name,
        row.granted,
        row.owner.processId,
      ]),
    ).toEqual([
      [String(hashKey(name)), name, true, process.pid],
      [String(hashKey(name)), name, false, process.pid],
    ]);
    expect(json[1].waitingFor).toEqual([Number(holderPid)]);
    await held.release();
    await (await waiting).release();
  });

  it("ls --watch redraws in a terminal and exits 0 on Ctrl-C", async () => {
    const name = uniqueName("watch");
    const locker = createLocker(makePool());
    lockers.push(locker);
    const held = await locker.acquire(name);
    // script(1) runs the command on a pseudo-terminal; a Ctrl-C typed into it is a real SIGINT.
    const command = [PGLOCK, ...PGLOCK_ARGS, "ls", "--watch", "--interval", "200ms", "--key", name]
      .map((word) => `'${word}'`)
      .join(" ");
    const terminal = spawn("script", ["-qfec", `exec ${command}`, "/dev/null"], {
      env: { ...process.env, DATABASE_URL: databaseUrl() },
      stdio: ["pipe", "pipe", "pipe"],
    });
    started.push(terminal);
    let screen = "";
    terminal.stdout.on("data", (chunk) => {
      screen += chunk;
    });
    const exited = new Promise<number | null>((resolve) => terminal.on("exit", (code) => resolve(code)));
    // Two frames that show the holder, the second with how long the view has seen it hold.
    await eventually(async () => screen.split("pglock ls --watch").length > 2 && /held\s+>=\d/.test(screen), 20_000);
    expect(screen).toContain("\x1b[H\x1b[2J");
    expect(screen).toContain(String(hashKey(name)));
    terminal.stdin.write("\x03");
    expect(await exited).toBe(0);
    expect(screen).not.toMatch(/Error|at .*\.ts:\d+/);
    await held.release();
  });

  it("every key that key and ls print, negative ones included, is accepted back by run --id and --pair", async () => {
    const name = negativeName(); // this test's own: the examples lock "cleanup-task" in parallel
    const printed = (await pglock(["key", name])).stdout.split("\n")[0] as string;
    expect(printed).toBe(String(hashKey(name)));
    expect(printed.startsWith("-")).toBe(true);
    const pair: [number, number] = [-(2 ** 31), -Math.floor(Math.random() * 2 ** 31)];
    const locker = createLocker(makePool());
    lockers.push(locker);
    const heldPair = await locker.acquire(pair);
    const listed = JSON.parse((await pglock(["ls", "--key", `${pair[0]},${pair[1]}`, "--pair", "--json"])).stdout);
    expect(listed.map((row: { key: unknown }) => row.key)).toEqual([pair]);
    const pairText = (listed[0].key as number[]).join(",");
    // Busy: the printed pair names the lock the Locker holds, in every way it can be written.
    for (const args of [
      ["--pair", pairText, "--no-wait", "--", "true"],
      [`--pair=${pairText}`, "--no-wait", "--", "true"],
      ["--pair", "--no-wait", "--", pairText, "--", "true"],
    ]) {
      expect((await pglock(["run", ...args])).code, args.join(" ")).toBe(75);
    }
    await heldPair.release();
    const heldId = await locker.acquire(name);
    for (const args of [["--id", printed], [`--id=${printed}`]]) {
      expect((await pglock(["run", ...args, "--no-wait", "--", "true"])).code, args.join(" ")).toBe(75);
    }
    expect((await pglock(["run", "--id", "--no-wait", "--", printed, "--", "true"])).code).toBe(75);
    await heldId.release();
    const ran = await pglock(["run", "--id", printed, "--", "sh", "-c", "echo ran; exit 5"]);
    expect(ran).toMatchObject({ code: 5, stdout: "ran\n" });
  });

  it("key prints the hash and the pg_locks query that finds it", async () => {
    expect((await pglock(["key", "cleanup-task"])).stdout.split("\n")[0]).toBe("-7671976228194938313");
    // The lock itself on a name of this test's own: examples/scheduled-job.ts locks "cleanup-task",
    // and test files run in parallel.
    const name = negativeName();
    const result = await pglock(["key", name]);
    expect(result.stdout.split("\n")[0]).toBe(String(hashKey(name)));
    const query = result.stdout.split("\n").find((line) => line.startsWith("SELECT")) as string;
    const locker = createLocker(makePool());
    lockers.push(locker);
    const held = await locker.acquire(name);
    const { rows } = await makePool({ max: 1 }).query(query);
    expect(rows).toHaveLength(1);
    await held.release();
  });

  it("help, version, usage errors (exit 2) and an unreachable database (one line, no password)", async () => {
    expect(await pglock(["--help"])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: pglock/) });
    expect(await pglock(["run", "--help"])).toMatchObject({ code: 0, stdout: expect.stringMatching(/--no-wait/) });
    expect((await pglock(["--version"])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const args of [
      [],
      ["frobnicate"],
      ["run", "k"],
      ["run", "k", "--"],
      ["run", "k", "--bogus", "--", "true"],
      ["run", "--id", "x", "--", "true"],
      ["run", "k", "--timeout", "soon", "--", "true"],
      ["run", "k", "--wait", "--no-wait", "--", "true"],
    ]) {
      const result = await pglock(args);
      expect(result.code, args.join(" ")).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(/^pglock: .*\n\nUsage: pglock/);
    }
    const typo = await pglock(["run", "k", "--timout", "5s", "--", "true"]);
    expect(typo.stderr).toMatch(/^pglock: unknown option --timout \(did you mean --timeout\?\)/);
    const unreachable = await pglock([
      "run",
      "k",
      "--database",
      "postgres://me:hunter2secret@127.0.0.1:1/db",
      "--",
      "true",
    ]);
    expect(unreachable.code).toBe(69);
    expect(unreachable.stderr.trim().split("\n")).toHaveLength(1);
    expect(unreachable.stderr).toMatch(/cannot reach the database/);
    const ls = await pglock(["ls"], { DATABASE_URL: "postgres://me:hunter2secret@127.0.0.1:1/db" });
    expect(ls.code).toBe(69);
    expect(ls.stderr.trim().split("\n")).toHaveLength(1);
    expect(unreachable.stderr + ls.stderr).not.toContain("hunter2secret");
  });

  it("demo runs against the given database and exits 0; without one it says what to set", async () => {
    const none = await pglock(["demo"], { DATABASE_URL: "", PGHOST: "", PGDATABASE: "" });
    expect(none).toMatchObject({ code: 2, stdout: "" });
    expect(none.stderr).toMatch(/demo needs a database: pass --database URL, or set DATABASE_URL/);
    const result = await pglock(["demo"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Leader election/);
    expect(result.stdout).toMatch(/semaphore of 2 permits/);
  });
});

/** A name of this run's own whose key is a negative int64 (as "cleanup-task"'s is). */
function negativeName(): string {
  for (;;) {
    const name = uniqueName("negative");
    if (hashKey(name) < 0n) return name;
  }
}

describe("pglock run: the command's whole process group, and servers that never answer (issue #26)", () => {
  /** The pids of processes whose command line contains `marker`. */
  function processesWith(marker: string): number[] {
    const { stdout } = spawnSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
    return stdout
      .split("\n")
      .filter((line) => line.includes(marker) && !line.includes("ps -eo"))
      .map((line) => Number(line.trim().split(/\s+/)[0]));
  }
  /** A command with a grandchild, as `npm run job` or `sh -c` makes one. */
  const nested = (marker: string) => [
    "sh",
    "-c",
    `bash -c 'echo ready; while true; do sleep 0.05; : ${marker}; done'; true`,
  ];

  it.runIf(process.platform !== "win32")(
    "SIGTERM to pglock, a lost lock, and SIGKILL of pglock each stop the grandchildren too",
    async () => {
      const admin = makePool({ max: 1 });
      for (const end of ["SIGTERM", "lost", "SIGKILL"] as const) {
        const name = uniqueName("cli-group");
        const marker = uniqueName("grandchild");
        const { child, exited, output } = start(["run", name, "--kill-after", "1s", "--", ...nested(marker)]);
        await eventually(() => output().stdout.includes("ready"));
        expect(processesWith(marker).length).toBeGreaterThan(0);
        if (end === "lost") {
          const [holder] = await heldBy(name);
          await admin.query("SELECT pg_terminate_backend($1)", [holder?.pid]);
          expect(await exited).toBe(70);
        } else {
          process.kill(child.pid as number, end);
          await exited;
        }
        // Nobody runs without the lock: the grandchild is gone (SIGKILL: the guardian's TERM, then KILL).
        await eventually(() => processesWith(marker).length === 0, 10_000);
      }
    },
  );

  it("a server that accepts and never answers: --timeout exits 69 at once, --no-wait ends on SIGTERM, ls exits 69", async () => {
    let connections = 0;
    const silent = createServer(() => {
      connections++; // accepts, never answers
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const port = (silent.address() as AddressInfo).port;
    const database = `postgres://app:not-the-password@127.0.0.1:${port}/db`;
    try {
      const started = performance.now();
      const timed = await pglock(["run", uniqueName(), "--timeout", "2s", "--database", database, "--", "true"]);
      expect([timed.code, timed.stderr.trim()]).toEqual([69, "pglock: cannot reach the database within 2s"]);
      expect(performance.now() - started).toBeLessThan(15_000);
      const before = connections;
      const noWait = spawn(
        PGLOCK,
        [...PGLOCK_ARGS, "run", uniqueName(), "--no-wait", "--database", database, "--", "true"],
        {
          stdio: "ignore",
        },
      );
      const ended = new Promise<number | null>((resolve) => noWait.on("exit", (code) => resolve(code)));
      // Once it connects, it waits for the server's answer with its signal handlers in place (a
      // signal during its start-up kills it by the default action, with nothing run).
      await eventually(() => connections > before, 20_000);
      // process.kill: Deno reports a child it kill()ed as killed by the signal, whatever it exited with.
      process.kill(noWait.pid as number, "SIGTERM");
      expect(await ended).toBe(143);
      const ls = await pglock(["ls", "--database", database]);
      expect(ls.code).toBe(69);
      expect(ls.stderr).not.toContain("not-the-password");
    } finally {
      silent.close();
    }
  }, 45_000);
});

describe("pglock ls --watch into a pipe", () => {
  it("writes no escape codes, and a reader that stops reading ends it quietly (EPIPE)", async () => {
    const child = spawn(PGLOCK, [...PGLOCK_ARGS, "ls", "--watch", "--interval", "100ms"], {
      env: { ...process.env, DATABASE_URL: databaseUrl() },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    await new Promise<void>((resolve) =>
      child.stdout.on("data", (chunk) => {
        stdout += chunk;
        if (stdout.split("pglock ls --watch").length > 2) resolve();
      }),
    );
    expect(stdout).not.toContain("\x1b");
    child.stdout.destroy(); // as `head -n 2` does once it has its lines
    expect(await exited).toBe(0);
    expect(stderr).toBe("");
  });
});
