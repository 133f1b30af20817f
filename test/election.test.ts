/**
 * Leaders others can see (issue #28), with real processes: A and B campaign, C only observes, and
 * all three observe. Each process prints what it sees with Date.now(), one clock for the machine.
 * On the session Locker and on the lease Locker.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createLeaseLocker, createLocker, InvalidArgumentError } from "pglock";
import { afterEach, describe, expect, it } from "vitest";
import { databaseUrl, eventually, makePool, uniqueName } from "./support/db.js";

interface Seen {
  e: string;
  id: string;
  t: number;
  owner?: string | null;
  term?: string | null;
  lost?: boolean;
  payload?: unknown;
}

const TERM_MS = 2_000;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill("SIGKILL");
});

function start(kind: string, name: string, id: string, role: "campaign" | "observe", events: Seen[]) {
  // node itself, not the tsx wrapper: the process signalled must be the one holding the connection.
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "test/support/election-child.ts", kind, name, String(TERM_MS), id, role],
    { env: { ...process.env, DATABASE_URL: databaseUrl() }, stdio: ["pipe", "pipe", "inherit"] },
  );
  children.push(child);
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    try {
      events.push(JSON.parse(line) as Seen);
    } catch {}
  });
  return child;
}

async function until(events: Seen[], test: (event: Seen) => boolean, timeoutMs = 20_000): Promise<Seen> {
  await eventually(() => events.some(test), timeoutMs);
  return events.find(test) as Seen;
}

describe.each(["session", "lease"])("leader election across processes, %s Locker", (kind) => {
  it("observers see every change within 1 s; resign hands over in < 500 ms; a frozen or killed leader is replaced", async () => {
    const name = uniqueName(`election-${kind}`);
    const events: Seen[] = [];
    const a = start(kind, name, "A", "campaign", events);
    const electedA = await until(events, (e) => e.e === "elected" && e.id === "A");
    expect(electedA.payload).toEqual({ address: "A.internal:8080" });
    const b = start(kind, name, "B", "campaign", events);
    start(kind, name, "C", "observe", events);
    for (const id of ["B", "C"]) await until(events, (e) => e.e === "saw" && e.id === id && e.owner === "A");

    // 1. resign: A hands over to B.
    a.stdin?.write("resign\n");
    const resigning = await until(events, (e) => e.e === "resigning");
    const electedB = await until(events, (e) => e.e === "elected" && e.id === "B");
    expect(electedB.t - resigning.t).toBeLessThan(500);
    expect(BigInt(electedB.term as string)).toBeGreaterThan(BigInt(electedA.term as string));

    // 2. frozen: B stops (SIGSTOP); A deposes it once its term has run out, and B, resumed, stops its duties.
    const frozenAt = Date.now();
    b.kill("SIGSTOP");
    const electedA2 = await until(events, (e) => e.e === "elected" && e.id === "A" && e.t > frozenAt);
    // Not before its term could have run out: it was last renewed at most a third of a term before.
    expect(electedA2.t - frozenAt).toBeGreaterThanOrEqual((TERM_MS * 2) / 3 - 200);
    expect(electedA2.t - frozenAt).toBeLessThan(TERM_MS + 3_000);
    b.kill("SIGCONT");
    await until(events, (e) => e.e === "demoted" && e.id === "B" && e.lost === true);

    // 3. killed: A dies (kill -9); B, campaigning again, takes over.
    const killedAt = Date.now();
    a.kill("SIGKILL");
    const electedB2 = await until(events, (e) => e.e === "elected" && e.id === "B" && e.t > killedAt);
    // The session ends with the process; a lease's holder is deposed when its term runs out.
    expect(electedB2.t - killedAt).toBeLessThan(kind === "session" ? 1_000 : TERM_MS + 3_000);

    console.log(
      `${kind}: resign → B elected ${electedB.t - resigning.t} ms; frozen B replaced after ${electedA2.t - frozenAt} ms; ` +
        `killed A replaced after ${electedB2.t - killedAt} ms`,
    );
    // Every term, seen by the observers within 1 s of its leader's election.
    for (const elected of [electedB, electedA2, electedB2]) {
      for (const observer of ["C", elected.id === "A" ? "B" : "A"]) {
        if (observer === "A" && elected === electedB2) continue; // A is dead by then
        if (observer === "B" && elected === electedA2) continue; // B is frozen then
        const saw = await until(events, (e) => e.e === "saw" && e.id === observer && e.term === elected.term);
        expect(saw.t - elected.t, `${observer} saw term ${elected.term}`).toBeLessThan(1_000);
      }
    }
  }, 60_000);
});

describe("leader()", () => {
  it("reports nobody once the leader releases, and refuses bad options", async () => {
    const pool = makePool({ max: 4 });
    for (const locker of [createLocker(pool), createLeaseLocker(pool)]) {
      try {
        const election = locker.leaderElection(uniqueName("leader-read"), { owner: "me" });
        expect(await election.leader()).toBeNull();
        const stop = new AbortController();
        let token: bigint | undefined;
        const running = election.run(
          async (signal, term) => {
            token = term.token;
            await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
          },
          { signal: stop.signal, payload: { port: 1 } },
        );
        await eventually(() => election.isLeader);
        expect(await election.leader()).toMatchObject({ owner: "me", payload: { port: 1 }, term: token });
        stop.abort();
        await running;
        expect(await election.leader()).toBeNull();
        expect(() => locker.leaderElection("x", { termMs: 10 })).toThrow(InvalidArgumentError);
        await expect(election.run(() => {}, { payload: 1n })).rejects.toThrow(/JSON value/);
      } finally {
        await locker.close();
      }
    }
  });
});
