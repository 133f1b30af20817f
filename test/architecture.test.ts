// The shape DESIGN.md asks for, checked on the source: no import cycle in src/ (issue #17 named the
// one that was there: locker/locker.ts imported patterns/, and patterns/notifier.ts the Locker back).
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

describe("src/", () => {
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
