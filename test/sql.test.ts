// The SQL builders, without a database: every statement pglock sends keeps its rules, whatever the
// key. Values travel as parameters, never in the text; every function is schema-qualified, so a
// user's search_path cannot shadow one; the placeholders match the values (issue #24: pure logic gets
// unit tests that need no database). What the statements do is the other suites' business.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type LockKey, lockKey } from "../src/key.js";
import * as sql from "../src/sql/advisory.js";
import { nextToken } from "../src/sql/fencing.js";
import { leaderStatements, listLeaders } from "../src/sql/leaders.js";
import { leaseStatements } from "../src/sql/lease.js";
import { notify, revoke } from "../src/sql/notify.js";

/** Function calls without a schema (pg_catalog. or the table's own). */
function unqualifiedCalls(text: string): string[] {
  const calls = [
    ...text.matchAll(/(?<![.\w])(pg_\w+|set_config|current_setting|unnest|jsonb_\w+|nextval|left|length)\s*\(/g),
  ];
  return calls.map((match) => match[1] as string);
}

/** The highest $n in the text, and whether every $1..$n appears. */
function placeholders(text: string): { highest: number; gapless: boolean } {
  const used = new Set([...text.matchAll(/\$(\d+)/g)].map((match) => Number(match[1])));
  const highest = Math.max(0, ...used);
  return { highest, gapless: Array.from({ length: highest }, (_, i) => used.has(i + 1)).every(Boolean) };
}

function expectWellFormed(statement: sql.Statement, key?: LockKey): void {
  expect(unqualifiedCalls(statement.text), statement.text).toEqual([]);
  const { highest, gapless } = placeholders(statement.text);
  // A guarded statement's last parameter is the backend pid, which the Session supplies.
  expect(highest, statement.text).toBe(statement.values.length + (statement.guarded ? 1 : 0));
  expect(gapless, statement.text).toBe(true);
  if (key?.id !== undefined && (key.id > 9_999n || key.id < -9_999n)) {
    // The key's digits are a value: only a claim's pg_locks tag (computed, digits only) may name a key.
    expect(statement.text.replace(/^\/\* pglock waits [0-9.: ]+ holds [0-9.: ]+ \*\/ /, "")).not.toContain(
      String(key.id < 0n ? -key.id : key.id),
    );
  }
}

const keys = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((id) => lockKey(id)),
  fc
    .tuple(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }))
    .map((pair) => lockKey(pair)),
  fc.string({ minLength: 1 }).map((name) => lockKey(name)),
);
const modes = fc.constantFrom("exclusive" as const, "shared" as const);

describe("the SQL builders", () => {
  it("every lock statement takes its key as parameters, schema-qualified, with matching placeholders", () => {
    fc.assert(
      fc.property(keys, keys, modes, fc.integer({ min: 1, max: 10_000 }), (key, other, mode, sliceMs) => {
        const holds = [{ pid: 4242, key: other }];
        for (const statement of [
          sql.tryLock(key, mode),
          sql.waitLock(key, mode),
          sql.waitLock(key, mode, { sliceMs }),
          sql.waitLock(key, mode, { sliceMs, holds }),
          sql.unlock(key, mode),
          sql.unlockLevels(key, mode, 3),
          sql.holdsLock(key, mode),
          sql.advisoryLocks({ key, waitstart: true }),
          sql.xactLock(key, mode),
          sql.tryXactLock(key, mode),
          sql.batch([
            { op: "try", key, mode },
            { op: "unlock", key: other, mode },
          ]),
          sql.holdsLocks([{ op: "try", key, mode }]),
          nextToken("pglock_fencing", key),
        ]) {
          expectWellFormed(statement, key);
        }
      }),
    );
  });

  it("a claim in a wait's text is digits, dots, colons and spaces only, whatever the keys' names", () => {
    fc.assert(
      fc.property(keys, keys, fc.integer({ min: 1, max: 2 ** 22 }), (key, held, pid) => {
        const text = sql.waitLock(key, "exclusive", { holds: [{ pid, key: held }] }).text;
        const comment = /^\/\* (.*?) \*\//.exec(text)?.[1] ?? "";
        expect(comment).toMatch(/^pglock waits [0-9.]+ holds [0-9]+:[0-9.]+$/);
        expect(text.indexOf("*/")).toBe(text.lastIndexOf("*/"));
      }),
    );
  });

  it("the other statements keep the same rules: values as parameters, functions qualified", () => {
    const statements: sql.Statement[] = [
      sql.serverVersion(),
      sql.describeSession(sql.NEUTRAL_TIMEOUTS),
      sql.terminateBackend(1, "0", "SELECT 1", "pglock host:1@abc locker-1"),
      sql.restoreSettings([["lock_timeout", "5s"]]),
      sql.ping(),
      sql.unlockAll(),
      sql.setLocalLockTimeout("100ms"),
      notify("semaphore:1"),
    ];
    for (const statement of statements) expectWellFormed(statement);
    // A value that looks like SQL stays a value.
    expect(notify("x'); DROP TABLE t; --").text).not.toContain("DROP");
  });

  it("the lease statements qualify their functions and use only their documented parameters", () => {
    const lease = leaseStatements("pglock_leases");
    const documented = {
      acquire: 6,
      enqueue: 3,
      dequeue: 2,
      renew: 3,
      release: 2,
      cleanUp: 1,
      announceTtl: 1,
      revoke: 1,
      inspect: 1,
      holders: 1,
    };
    for (const [name, count] of Object.entries(documented)) {
      const text = lease[name as keyof typeof documented];
      expect(unqualifiedCalls(text), name).toEqual([]);
      expect(placeholders(text), name).toEqual({ highest: count, gapless: true });
    }
  });

  it("the statements of elections, revocation and inspection are parameterized and qualified", () => {
    const key = lockKey("election");
    const statements: sql.Statement[] = [
      listLeaders("pglock_leases"),
      revoke(42, key.identity),
      sql.terminateHolder(42, key),
      sql.heldAmong([key, lockKey([1, 2])]),
    ];
    for (const kind of ["session", "lease"] as const) {
      const leaders = leaderStatements("pglock_leases", kind);
      statements.push(
        leaders.proclaim(key, "{}", 7n, 1_000),
        leaders.renew(key, 7n, 1_000),
        leaders.resign(key, 7n),
        leaders.read(key),
        leaders.depose(key),
      );
    }
    for (const statement of statements) expectWellFormed(statement, key);
  });

  it("the checks can fail: an unqualified call and a gap are found", () => {
    expect(unqualifiedCalls("SELECT pg_advisory_lock($1)")).toEqual(["pg_advisory_lock"]);
    expect(placeholders("SELECT $1, $3")).toEqual({ highest: 3, gapless: false });
  });
});
