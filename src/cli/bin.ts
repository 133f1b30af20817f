#!/usr/bin/env node
/**
 * The `pglock` executable (built to dist/cli.mjs). It runs main() unconditionally: a bin is started
 * through symlinks (node_modules/.bin/pglock, npx, a global install), so guessing "am I the main
 * module?" from process.argv[1] silently did nothing there (issue #13). main.ts stays importable.
 */
import { main } from "./main.js";

// A reader that stops reading (`pglock ls --watch | head -n 2`) closes the pipe: that ends the
// output, not with a stack trace (issue #26).
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw error;
  });
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // Whatever is still pending (a connect to a server that never answers) must not keep pglock alive:
  // main has said everything it had to say.
  setTimeout(() => process.exit(code), 1_000).unref();
});
