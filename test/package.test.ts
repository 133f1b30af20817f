import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { databaseUrl } from "./support/db.js";
import { run } from "./support/run.js";

// The package as a user installs it: the built files through the `exports` map, from ESM and CommonJS.
describe("package", () => {
  it("builds, and its ESM and CommonJS entry points have the same named exports and types", async () => {
    const build = await run("node_modules/.bin/tsdown", [], {}, 120_000);
    expect(build.code).toBe(0);
    const esm = await run(process.execPath, [
      "--input-type=module",
      "-e",
      'import * as m from "pglock"; console.log(JSON.stringify([Object.keys(m).sort(), String(m.hashKey("cleanup-task"))]))',
    ]);
    const cjs = await run(process.execPath, [
      "-e",
      'const m = require("pglock"); console.log(JSON.stringify([Object.keys(m).sort(), String(m.hashKey("cleanup-task"))]))',
    ]);
    expect(esm.stderr).toBe("");
    expect(cjs.stderr).toBe("");
    const [esmNames, esmHash] = JSON.parse(esm.stdout);
    expect(JSON.parse(cjs.stdout)).toEqual([esmNames, esmHash]);
    expect(esmHash).toBe("-7671976228194938313");
    expect(esmNames).not.toContain("default");
    expect(esmNames).toEqual(expect.arrayContaining(["newLock", "lockKey", "hashKey", "PglockError"]));
    const manifest = JSON.parse(readFileSync("package.json", "utf8"));
    for (const condition of Object.values(manifest.exports["."]) as { types: string; default: string }[]) {
      expect(readFileSync(condition.types, "utf8")).toMatch(/declare function newLock/);
      expect(readFileSync(condition.default, "utf8").length).toBeGreaterThan(0);
    }
    expect(manifest.peerDependenciesMeta.pg.optional).toBe(true);
    const bin = await run(process.execPath, [manifest.bin.pglock, "key", "cleanup-task"]);
    expect(bin.stdout.split("\n")[0]).toBe("-7671976228194938313");
    expect(readFileSync(manifest.bin.pglock, "utf8")).toMatch(/^#!\/usr\/bin\/env node/);
    expect(manifest.dependencies?.pg).toBeUndefined();
    expect(manifest.peerDependenciesMeta.postgres.optional).toBe(true);
  });

  it("takes a lock through a postgres.js sql from both builds (pglock loads the postgres package itself)", async () => {
    const body = (load: string) =>
      `${load} const sql = postgres(process.env.DATABASE_URL, { onnotice() {} });
       const locker = createLocker(sql);
       locker.acquire("package-postgres-js").then(async (handle) => {
         await handle.release(); await locker.close(); await sql.end(); console.log("held and released");
       }).catch((error) => { console.error(error); process.exit(1); });`;
    const env = { DATABASE_URL: databaseUrl() };
    const esm = await run(
      process.execPath,
      ["--input-type=module", "-e", body('import { createLocker } from "pglock"; import postgres from "postgres";')],
      env,
    );
    const cjs = await run(
      process.execPath,
      ["-e", body('const { createLocker } = require("pglock"); const postgres = require("postgres");')],
      env,
    );
    for (const result of [esm, cjs]) {
      expect(result.stderr).toBe("");
      expect(result.stdout.trim()).toBe("held and released");
    }
  });
});
