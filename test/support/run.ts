import { spawn } from "node:child_process";

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end and collects its output; a generous bound kills a hung child. */
export function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 60_000,
  cwd?: string,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export const tsx = "node_modules/.bin/tsx";

/** The runtime this suite runs on: `npm test` is Node; `npm run test:runtimes` runs suites under Bun and Deno. */
export const runtime: "node" | "bun" | "deno" =
  "bun" in process.versions ? "bun" : "deno" in process.versions ? "deno" : "node";

/**
 * The command that runs a TypeScript program under the same runtime: Node through tsx, Bun as it is,
 * Deno with every permission (and `--sloppy-imports`, for the `.js` specifiers of src/). Under Deno,
 * `import "pglock"` resolves through package.json to the built dist/, as a Deno user's would.
 */
export function program(file: string): [string, string[]] {
  if (runtime === "bun") return [process.execPath, [file]];
  if (runtime === "deno") return [process.execPath, ["run", "-A", "--sloppy-imports", file]];
  return [process.execPath, ["--import", "tsx", file]];
}
