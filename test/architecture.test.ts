// The layering ARCHITECTURE.md describes, checked on the source: which layer each file of src/ is in,
// what each layer may import, and no import cycle (issue #17 named the one that was there:
// locker/locker.ts imported patterns/, and patterns/notifier.ts the Locker back; issue #24 the rest).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { describe, expect, it } from "vitest";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

/** Every relative import of every file in src/, type-only ones too: a dependency either way. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources("src")) {
    const text = readFileSync(file, "utf8");
    const targets = [...text.matchAll(/^(?:import|export)[^;]*?from "(\.[^"]+)\.js";/gms)].map((match) =>
      normalize(join(dirname(file), `${match[1]}.ts`)),
    );
    graph.set(normalize(file), targets);
  }
  return graph;
}

function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (file: string) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      found.push([...path.slice(path.indexOf(file)), file].map((f) => relative("src", f)));
      return;
    }
    state.set(file, "open");
    path.push(file);
    for (const next of graph.get(file) ?? []) visit(next);
    path.pop();
    state.set(file, "done");
  };
  for (const file of graph.keys()) visit(file);
  return found;
}

/** The layers, bottom up, as ARCHITECTURE.md lists them. */
const LAYERS: Record<string, (file: string) => boolean> = {
  values: (f) =>
    /^(key|errors|server-errors|validate|signals|pending|redact|database|identity|liveness)\.ts$/.test(f) ||
    f.startsWith("sql/"),
  session: (f) => f.startsWith("session/"),
  "lock core": (f) => /^(acquire|locks|waits|deadlock)\.ts$/.test(f),
  contract: (f) => f.startsWith("contract/"),
  patterns: (f) => f.startsWith("patterns/"),
  facade: (f) => f.startsWith("locker/"),
  advisory: (f) => f.startsWith("advisory/"),
  lease: (f) => f.startsWith("lease/"),
  memory: (f) => f.startsWith("memory/"),
  "seed Lock": (f) => f === "lock.ts",
  entry: (f) => /^(index|opentelemetry)\.ts$/.test(f) || f.startsWith("cli/"),
};

/** What each layer may import besides itself. Backends (advisory, lease, memory) never import each other. */
const MAY_IMPORT: Record<string, string[]> = {
  values: [],
  session: ["values"],
  "lock core": ["values", "session"],
  contract: ["values"],
  patterns: ["values", "contract"],
  facade: ["values", "contract", "patterns"],
  advisory: ["values", "session", "lock core", "contract", "patterns", "facade"],
  lease: ["values", "session", "contract", "patterns", "facade"],
  memory: ["values", "contract", "patterns", "facade"],
  "seed Lock": ["values", "session", "lock core", "contract"],
  entry: Object.keys(LAYERS),
};

function layerOf(file: string): string {
  const path = relative("src", file);
  const layers = Object.keys(LAYERS).filter((layer) => LAYERS[layer]?.(path));
  if (layers.length !== 1) throw new Error(`${path} is in ${layers.length} layers: add it to LAYERS`);
  return layers[0] as string;
}

function breaches(graph: Map<string, string[]>): string[] {
  const found: string[] = [];
  for (const [file, targets] of graph) {
    const from = layerOf(file);
    for (const target of targets) {
      const to = layerOf(target);
      if (to !== from && !MAY_IMPORT[from]?.includes(to)) {
        found.push(`${relative("src", file)} (${from}) imports ${relative("src", target)} (${to})`);
      }
    }
  }
  return found;
}

describe("src/", () => {
  it("keeps every file in one layer, and imports only from the layers below it that it may use", () => {
    const graph = importGraph();
    expect(breaches(graph)).toEqual([]);
  });

  it("finds a breach when there is one (the check can fail)", () => {
    const graph = new Map([
      ["src/lease/locker.ts", ["src/advisory/locker.ts"]],
      ["src/patterns/semaphore.ts", ["src/locker/facade.ts"]],
    ]);
    expect(breaches(graph)).toEqual([
      "lease/locker.ts (lease) imports advisory/locker.ts (advisory)",
      "patterns/semaphore.ts (patterns) imports locker/facade.ts (facade)",
    ]);
  });

  it("has no import cycle", () => {
    const graph = importGraph();
    expect(graph.size).toBeGreaterThan(30);
    expect(cycles(graph)).toEqual([]);
  });

  it("finds a cycle when there is one (the check can fail)", () => {
    const graph = new Map([
      ["src/a.ts", ["src/b.ts"]],
      ["src/b.ts", ["src/a.ts"]],
    ]);
    expect(cycles(graph)).toEqual([["a.ts", "b.ts", "a.ts"]]);
  });
});
