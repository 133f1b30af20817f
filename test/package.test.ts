// The package as a user installs it. First from this checkout, through the `exports` map; then what
// users get: the packed tarball installed with pg into a new project (in a fresh 0700 temporary
// directory, as `mktemp -d` makes), its bin started through node_modules/.bin, its entry points
// imported from ESM and CommonJS. The bin once did nothing and exited 0 when started through npm's
// symlink (issue #13); only a test from an installed copy can see that.
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createLocker, hashKey, type Locker, lockKey } from "pglock";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiReport, examplesModule, REPORT, undocumented } from "../tools/api-report.js";
import { databaseUrl, makePool, uniqueName } from "./support/db.js";
import { expectedSummary } from "./support/otel-scenario.js";
import { run } from "./support/run.js";

let project: string;

/** `npm install` into the user project; --prefer-offline: the packages come from the npm cache that
 * installing this repository filled. */
const npmInstall = (packages: string[]) =>
  run(
    "npm",
    ["install", "--no-audit", "--no-fund", "--prefer-offline", ...packages],
    { npm_config_loglevel: "error" },
    240_000,
    project,
  );
const lockers: Locker[] = [];

beforeAll(async () => {
  const build = await run("node_modules/.bin/tsdown", [], {}, 120_000);
  expect(build.code, build.stderr).toBe(0);
  project = await mkdtemp(join(tmpdir(), "pglock-installed-"));
  const pack = await run("npm", ["pack", "--silent", "--pack-destination", project], {}, 120_000);
  expect(pack.code, pack.stderr).toBe(0);
  const tarball = join(project, pack.stdout.trim().split("\n").pop() as string);
  const version = async (name: string) =>
    JSON.parse(await readFile(`node_modules/${name}/package.json`, "utf8")).version as string;
  const pgVersion = await version("pg");
  const otelApiVersion = await version("@opentelemetry/api");
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "a-user-project", private: true }));
  // pg and the OpenTelemetry API (pglock/opentelemetry's peer) as a user's project would have them.
  const install = await npmInstall([tarball, `pg@${pgVersion}`, `@opentelemetry/api@${otelApiVersion}`]);
  expect(install.code, install.stderr).toBe(0);
}, 400_000);

afterAll(async () => {
  await Promise.all(lockers.splice(0).map((locker) => locker.close()));
  if (project) await rm(project, { recursive: true, force: true });
});

const pglock = (args: string[]) =>
  run(join(project, "node_modules/.bin/pglock"), args, { DATABASE_URL: databaseUrl() });

describe("the built package, from this checkout", () => {
  it("declares exactly the API of the checked-in report (api/pglock.api.d.ts), in ESM and CommonJS alike", () => {
    // A change to the public surface must show in a diff: run `npm run api` and review it (issue #24).
    expect(apiReport(), "the built declarations differ from api/pglock.api.d.ts: run `npm run api`").toBe(
      readFileSync(REPORT, "utf8"),
    );
    for (const entry of ["index", "opentelemetry"]) {
      expect(readFileSync(`dist/${entry}.d.cts`, "utf8")).toBe(readFileSync(`dist/${entry}.d.mts`, "utf8"));
    }
  });

  it("its command, where pg is not installed, exits 78 and says what to install", async () => {
    const alone = await mkdtemp(join(tmpdir(), "pglock-no-pg-"));
    try {
      await writeFile(join(alone, "cli.mjs"), readFileSync("dist/cli.mjs"));
      const result = await run(process.execPath, [join(alone, "cli.mjs"), "ls"], {}, 30_000, alone);
      expect(result).toMatchObject({ code: 78, stdout: "" });
      expect(result.stderr).toBe("pglock: the pglock command needs the pg package: npm install pg\n");
    } finally {
      await rm(alone, { recursive: true, force: true });
    }
  });

  it("documents every export and every member of an exported class or interface", () => {
    expect(undocumented()).toEqual([]);
  });

  it("its ESM and CommonJS entry points have the same named exports and types", async () => {
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
      const declarations = readFileSync(condition.types, "utf8");
      expect(declarations).toMatch(/declare function newLock/);
      // The internals are not the API (issue #24): no @internal member or class reaches the declarations.
      for (const internal of ["@internal", "runShort", "openDedicatedSession", "declare class Session", "KeyState"]) {
        expect(declarations, `${condition.types} declares ${internal}`).not.toContain(internal);
      }
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

describe("the installed package", () => {
  it("its pglock bin runs through npm's symlink: --version, key, run, --no-wait, ls --json", async () => {
    const manifest = JSON.parse(await readFile("package.json", "utf8"));
    expect(await pglock(["--version"])).toMatchObject({ code: 0, stdout: `${manifest.version}\n` });
    const key = await pglock(["key", "cleanup-task"]);
    expect(key.stdout.split("\n")[0]).toBe("-7671976228194938313");

    const ran = await pglock(["run", uniqueName("installed"), "--", "sh", "-c", "echo ran; exit 7"]);
    expect(ran).toMatchObject({ code: 7, stdout: "ran\n" });

    const name = uniqueName("installed");
    const locker = createLocker(makePool());
    lockers.push(locker);
    const held = await locker.acquire(name);
    const busy = await pglock(["run", name, "--no-wait", "--", "echo", "must not run"]);
    expect(busy).toMatchObject({ code: 75, stdout: "" });
    const busyById = await pglock(["run", "--id", String(hashKey(name)), "--no-wait", "--", "true"]);
    expect(busyById.code).toBe(75);
    const listed = await pglock(["ls", "--key", name, "--json"]);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ key: String(hashKey(name)), mode: "exclusive", granted: true }),
    ]);
    await held.release();
  });

  it("is imported from ESM and from CommonJS with the same named exports", async () => {
    const probe = (load: string) =>
      `${load}
       const pool = new Pool({ connectionString: process.env.DATABASE_URL });
       const locker = m.createLocker(pool);
       locker.withLock("installed-import", async () => "held").then(async (result) => {
         await locker.close(); await pool.end();
         console.log(JSON.stringify([Object.keys(m).sort(), String(m.hashKey("cleanup-task")), result]));
       }).catch((error) => { console.error(error); process.exit(1); });`;
    await writeFile(
      join(project, "probe.mjs"),
      probe('import * as m from "pglock"; import pg from "pg"; const { Pool } = pg;'),
    );
    await writeFile(
      join(project, "probe.cjs"),
      probe(
        'const m = require("pglock"); const { Pool } = require("pg");' +
          // The main entry never loads the OpenTelemetry API: only pglock/opentelemetry does.
          'if (Object.keys(require.cache).some((file) => file.includes("@opentelemetry"))) throw new Error("loaded");',
      ),
    );
    const env = { DATABASE_URL: databaseUrl() };
    const esm = await run(process.execPath, [join(project, "probe.mjs")], env);
    const cjs = await run(process.execPath, [join(project, "probe.cjs")], env);
    expect(esm.stderr).toBe("");
    expect(cjs.stderr).toBe("");
    const [names, hash, result] = JSON.parse(esm.stdout);
    expect(JSON.parse(cjs.stdout)).toEqual([names, hash, result]);
    expect(names).toEqual(expect.arrayContaining(["createLocker", "newLock", "hashKey", "PglockError"]));
    expect(names).not.toContain("default");
    expect([hash, result]).toEqual(["-7671976228194938313", "held"]);
  });

  it("pglock/opentelemetry records the same metrics and spans from ESM and from CommonJS", async () => {
    // The scenario (TypeScript, with the SDK's in-memory exporters from this checkout) gets the
    // installed package's modules passed in; tsx from this checkout lets node load it.
    const scenario = join(import.meta.dirname, "support/otel-scenario.ts");
    const tsx = join(import.meta.dirname, "../node_modules/tsx/dist/loader.mjs");
    const key = uniqueName("installed-otel");
    const body = `
      const pools = {
        made: [],
        make() { const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL }); this.made.push(pool); return pool; },
        async terminate(app) {
          const admin = new pg.Pool({ connectionString: process.env.DATABASE_URL });
          await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE split_part(application_name, ' ', 1) = $1", [app]);
          await admin.end();
        },
      };
      otelScenario(pglock, instrumentPglock, pools, { key: ${JSON.stringify(key)}, app: ${JSON.stringify(uniqueName())} })
        .then(async (summary) => { await Promise.all(pools.made.map((p) => p.end())); console.log(JSON.stringify(summary)); })
        .catch((error) => { console.error(error); process.exit(1); });`;
    await writeFile(
      join(project, "otel.mjs"),
      `import * as pglock from "pglock"; import { instrumentPglock } from "pglock/opentelemetry"; import pg from "pg";
       const { otelScenario } = await import(${JSON.stringify(pathToFileURL(scenario).href)});${body}`,
    );
    await writeFile(
      join(project, "otel.cjs"),
      `const pglock = require("pglock"); const { instrumentPglock } = require("pglock/opentelemetry"); const pg = require("pg");
       const { otelScenario } = require(${JSON.stringify(scenario)});${body}`,
    );
    const env = { DATABASE_URL: databaseUrl() };
    const keyText = (name: string) => lockKey(name).toString();
    for (const file of ["otel.mjs", "otel.cjs"]) {
      // Bounded below the test's own timeout, so a hung child fails with what it printed.
      const result = await run(
        process.execPath,
        ["--import", pathToFileURL(tsx).href, join(project, file)],
        env,
        25_000,
      );
      expect({ signal: result.signal, stdout: result.stdout, stderr: result.stderr }, file).toMatchObject({
        signal: null,
        stderr: "",
      });
      expect(JSON.parse(result.stdout), file).toEqual(expectedSummary(key, keyText, false));
    }
  });

  it("its declarations type-check in a strict project (skipLibCheck: false) on @types/node 20 and the newest", async () => {
    // What `npm i -D @types/pg` brings today: the newest @types/node (issue #24: 26.x failed on an
    // inferred EventEmitter<[never]> in the shipped declarations).
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          skipLibCheck: false,
          module: "nodenext",
          moduleResolution: "nodenext",
          target: "ES2022",
          lib: ["ES2022", "ESNext.Disposable"],
          noEmit: true,
          types: ["node"],
        },
        files: ["user.mts", "examples.mts"],
      }),
    );
    await writeFile(
      join(project, "user.mts"),
      `import pg from "pg";
import { type AnyLocker, createLeaseLocker, createLocker, createMemoryLocker, Locker, newLock, Semaphore } from "pglock";
import { instrumentPglock } from "pglock/opentelemetry";
const pool = new pg.Pool();
const locker = createLocker(pool);
await locker.withLock("job", async (signal) => signal.aborted, { timeout: 1000 });
await newLock(pool, 1);
createLeaseLocker(pool);
instrumentPglock();
// Code written against any Locker takes each of the three.
const nightly = (any: AnyLocker) => any.tryWithLock("nightly", () => 1);
await nightly(locker);
await nightly(createMemoryLocker());
// @ts-expect-error a connection string is not a database
createLocker("postgres://app@db.example/prod");
// @ts-expect-error a Locker is made by createLocker, not by its constructor
new Locker(pool);
// @ts-expect-error a Semaphore is made by a Locker
new Semaphore(locker, "uploads", 3);
`,
    );
    // Every @example of the shipped declarations, as a user would paste it (issue #24).
    await writeFile(join(project, "examples.mts"), examplesModule(join(project, "node_modules/pglock")));
    const tsc = join(process.cwd(), "node_modules/.bin/tsc");
    for (const types of ["@types/pg", "@types/node@20"]) {
      const install = await npmInstall(["--no-save", "@types/pg", ...(types === "@types/pg" ? [] : [types])]);
      expect(install.code, install.stderr).toBe(0);
      const node = JSON.parse(await readFile(join(project, "node_modules/@types/node/package.json"), "utf8")).version;
      const check = await run(tsc, ["-p", project], {}, 120_000);
      expect({ types: node, code: check.code, output: check.stdout + check.stderr }).toEqual({
        types: node,
        code: 0,
        output: "",
      });
    }
  }, 300_000);
});
