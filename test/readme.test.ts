import { readFileSync } from "node:fs";
import * as pglock from "pglock";
import { describe, expect, it } from "vitest";

const readme = readFileSync("README.md", "utf8");

describe("README", () => {
  it("every snippet marked with an example file is that file's code, line for line", () => {
    const snippets = [...readme.matchAll(/<!-- (examples\/[\w-]+\.ts) -->\n```ts\n([\s\S]*?)```/g)];
    expect(snippets.length).toBeGreaterThanOrEqual(8);
    for (const [, file, code] of snippets) {
      const source = readFileSync(file as string, "utf8");
      expect(source, `${file} should contain the README's snippet`).toContain((code as string).trimEnd());
    }
  });

  it("names every runtime export in its table of exports", () => {
    const table = readme.slice(readme.indexOf("## Everything pglock exports"), readme.indexOf("## Lock —"));
    for (const name of Object.keys(pglock)) {
      if (name.endsWith("Error") && name !== "PglockError") continue; // listed in the errors table
      expect(table, `README exports table should mention ${name}`).toContain(name);
    }
    const errors = readme.slice(readme.indexOf("## Errors"), readme.indexOf("## Testing your code"));
    for (const name of Object.keys(pglock).filter((n) => n.endsWith("Error") && n !== "PglockError")) {
      expect(errors, `README errors table should mention ${name}`).toContain(`\`${name}\``);
    }
  });

  it("states the set-up commands and the test command CI runs", () => {
    expect(readme).toContain("npm install\nnpm test");
    expect(readFileSync(".ci/run", "utf8")).toMatch(/npm test/);
  });
});
