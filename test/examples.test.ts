import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { databaseUrl } from "./support/db.js";
import { program, run } from "./support/run.js";

// Every file under examples/ is a program a user could run; each checks its own outcome and exits
// non-zero when the scenario does not behave as the README says.
const examples = readdirSync("examples").filter((name) => name.endsWith(".ts"));

describe("examples", () => {
  it("covers every scenario of the go-pglock README", () => {
    for (const scenario of [
      "basic",
      "try-lock",
      "wait-and-lock",
      "timeout",
      "concurrent-workers",
      "distributed-task",
      "leader-election",
      "resource-pool",
      "migration-lock",
      "scheduled-job",
    ]) {
      expect(examples).toContain(`${scenario}.ts`);
    }
  });

  for (const example of examples) {
    it(`examples/${example} runs and exits 0`, async () => {
      const [command, args] = program(`examples/${example}`);
      const result = await run(command, args, { DATABASE_URL: databaseUrl() });
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      expect(result.stdout).not.toBe("");
    });
  }

  it("concurrent-workers shows five serialized critical sections", async () => {
    const [command, args] = program("examples/concurrent-workers.ts");
    const result = await run(command, args, { DATABASE_URL: databaseUrl(), WORK_MS: "50" });
    expect(result.stdout).toMatch(/5 critical sections, one after another: they never overlapped/);
    expect(result.stdout.match(/acquired lock/g)).toHaveLength(5);
  });
});
