// The README and the guides under docs/ tell the truth: every code block marked with an example file
// is that file's code (and the example runs in test/examples.test.ts), every link to a file or a
// heading of the project leads somewhere, and the reference names every export.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import * as pglock from "pglock";
import { describe, expect, it } from "vitest";

const pages = [
  "README.md",
  "CONTRIBUTING.md",
  "ARCHITECTURE.md",
  ...readdirSync("docs", { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".md"))
    .map((name) => `docs/${name}`),
];
const text = (page: string) => readFileSync(page, "utf8");

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\- ]/g, "")
    .replace(/ /g, "-");
}

function anchorsOf(page: string): Set<string> {
  return new Set([...text(page).matchAll(/^#{1,6} (.+)$/gm)].map((match) => anchorOf(match[1] as string)));
}

describe("the README and the guides", () => {
  it("every snippet marked with an example file is that file's code, line for line", () => {
    let count = 0;
    for (const page of pages) {
      for (const [, file, code] of text(page).matchAll(/<!-- (examples\/[\w-]+\.ts) -->\n```ts\n([\s\S]*?)```/g)) {
        count++;
        const source = readFileSync(file as string, "utf8");
        expect(source, `${page}: ${file} should contain the snippet`).toContain((code as string).trimEnd());
      }
    }
    expect(count).toBeGreaterThanOrEqual(8);
    // The README's first code block after the install line is a whole example, imports and clean-up included.
    expect(text("README.md")).toContain(
      `<!-- examples/quick-start.ts -->\n\`\`\`ts\n${text("examples/quick-start.ts").split("\n").slice(1).join("\n").trimEnd()}\n\`\`\``,
    );
  });

  it("every TypeScript block is an example's code, or names the test that runs it", () => {
    const unchecked: string[] = [];
    for (const page of pages) {
      const lines = text(page).split("\n");
      let open = false;
      lines.forEach((line, i) => {
        if (!line.startsWith("```")) return;
        if (!open && line === "```ts") {
          const marker = /^<!-- (?:(examples\/[\w-]+\.ts)|checked by ([\w/.-]+\.test\.ts)) -->$/.exec(
            lines[i - 1] ?? "",
          );
          if (!marker || !existsSync((marker[1] ?? marker[2]) as string)) unchecked.push(`${page}:${i + 1}`);
        }
        open = !open;
      });
    }
    expect(unchecked).toEqual([]);
  });

  it("every relative link leads to a file of the project, and every #anchor to a heading", () => {
    const broken: string[] = [];
    for (const page of pages) {
      for (const [, target] of text(page).matchAll(/\]\(((?!https?:|mailto:)[^)\s]+)\)/g)) {
        const [path, anchor] = (target as string).split("#") as [string, string | undefined];
        const file = path === "" ? page : normalize(join(dirname(page), path));
        if (!existsSync(file)) {
          broken.push(`${page}: ${target} (no ${file})`);
          continue;
        }
        if (anchor && file.endsWith(".md") && !anchorsOf(file).has(anchor)) broken.push(`${page}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it("the reference names every runtime export, and the errors page every error", () => {
    const reference = text("docs/reference.md");
    for (const name of Object.keys(pglock)) {
      if (name.endsWith("Error") && name !== "PglockError") continue; // on the errors page
      expect(reference, `docs/reference.md should mention ${name}`).toContain(name);
    }
    const errors = text("docs/errors.md");
    for (const name of Object.keys(pglock).filter((n) => n.endsWith("Error") && n !== "PglockError")) {
      expect(errors, `docs/errors.md should mention ${name}`).toContain(`\`${name}\``);
    }
  });

  it("the README is short, and states the set-up commands and the test command CI runs", () => {
    expect(text("README.md").split("\n").length).toBeLessThanOrEqual(250);
    expect(text("README.md")).toContain("npm install\nnpm test");
    expect(readFileSync(".ci/run", "utf8")).toMatch(/npm test/);
  });
});
