/**
 * Where the Node CPU of the throughput scenario goes: the 64-caller loop in a child process under
 * `node --cpu-prof`, its samples' self time grouped by who spends it.
 * https://nodejs.org/docs/latest-v20.x/api/cli.html#--cpu-prof
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { log } from "./harness.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}

function groupOf(frame: ProfileNode["callFrame"]): string | undefined {
  const { functionName, url } = frame;
  if (functionName === "(idle)") return undefined; // waiting for the server: not CPU
  if (functionName === "(garbage collector)") return "garbage collection";
  if (url === "" && /^(writev|writeBuffer|writeUtf8String|writeLatin1String|read|close)$/.test(functionName))
    return "socket system calls (writev, read)";
  if (/node_modules\/(pg|pg-protocol|pg-pool|pg-types|postgres-array)\//.test(url))
    return "pg driver (node_modules/pg*)";
  if (url.includes("/src/")) return "pglock (src/)";
  if (url.includes("/bench/")) return "the benchmark's own loop";
  if (url.startsWith("node:") || url === "" || !url.includes("/"))
    return "Node.js internals (streams, events, promises, timers)";
  return "other modules";
}

export function profileThroughput(url: string, ms: number, pin?: string) {
  log("### Where the Node CPU goes (64 callers, `--cpu-prof`)");
  log();
  const dir = mkdtempSync(join(tmpdir(), "pglock-profile-"));
  try {
    const node = [process.execPath, "--cpu-prof", `--cpu-prof-dir=${dir}`, "--import", "tsx", "bench/profile-child.ts"];
    const [command, ...args] = pin ? ["taskset", "-c", pin, ...node] : node;
    const child = spawnSync(command as string, args, {
      env: { ...process.env, DATABASE_URL: url, PROFILE_MS: String(ms) },
      encoding: "utf8",
    });
    const file = readdirSync(dir).find((name) => name.endsWith(".cpuprofile"));
    if (child.status !== 0 || !file) {
      log(`not measured: the profiled run failed (${child.stderr.split("\n")[0] ?? child.status})`);
      log();
      return;
    }
    const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as {
      nodes: ProfileNode[];
      samples: number[];
      timeDeltas: number[];
    };
    const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
    const byGroup = new Map<string, number>();
    let busy = 0;
    profile.samples.forEach((id, i) => {
      const group = groupOf((nodes.get(id) as ProfileNode).callFrame);
      if (!group) return;
      const micros = profile.timeDeltas[i] ?? 0;
      byGroup.set(group, (byGroup.get(group) ?? 0) + micros);
      busy += micros;
    });
    const run = JSON.parse(child.stdout.trim().split("\n").pop() as string) as { pairsPerSecond: number };
    log(
      `Profiled run: ${Math.round(run.pairsPerSecond)} pairs/s (the profiler slows it). Self time of the busy samples (idle samples, waiting for the server, left out):`,
    );
    log();
    log("| spent in | share of Node's busy time |");
    log("| --- | --- |");
    for (const [group, micros] of [...byGroup].sort((a, b) => b[1] - a[1])) {
      log(`| ${group} | ${((100 * micros) / busy).toFixed(1)}% |`);
    }
    log();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
