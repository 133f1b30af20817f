/** `pglock run`: a distributed flock. Holds the lock while a command runs; exits with its exit code. */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { createLocker } from "../advisory/locker.js";
import { LockTimeoutError } from "../errors.js";
import { settleWithin } from "../pending.js";
import { keyFormat, parseDuration, parseExitCode, parseFlags, parseKey, UsageError } from "./args.js";
import { describeFailure, makePool } from "./connect.js";

export const EXIT_BUSY = 75; // EX_TEMPFAIL, like flock -E
export const EXIT_LOST = 70; // EX_SOFTWARE: the command ran unprotected and was stopped
export const EXIT_UNAVAILABLE = 69; // EX_UNAVAILABLE: the database could not be reached

const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;

export async function run(args: string[], io: { error(line: string): void }): Promise<number> {
  const separator = args.indexOf("--");
  if (separator < 0) throw new UsageError("run needs `--` before the command: pglock run <key> -- <command> [args…]");
  let command = args.slice(separator + 1);
  const { values, positionals } = parseFlags(args.slice(0, separator), {
    shared: { type: "boolean" },
    wait: { type: "boolean" },
    "no-wait": { type: "boolean" },
    timeout: { type: "string" },
    "busy-exit-code": { type: "string" },
    "lost-exit-code": { type: "string" },
    "kill-after": { type: "string" },
    "at-least": { type: "string" },
    "at-most": { type: "string" },
    id: { type: "boolean" },
    pair: { type: "boolean" },
    database: { type: "string" },
  });
  // `pglock run --id -- -5 -- cmd`: the key after an end-of-options `--`, the command after the next one.
  if (positionals.length === 0 && (values.id || values.pair) && command[1] === "--" && command[0] !== undefined) {
    positionals.push(command[0]);
    command = command.slice(2);
  }
  if (command.length === 0) throw new UsageError("run needs a command after `--`");
  if (positionals.length !== 1)
    throw new UsageError(`run needs exactly one <key> before \`--\`, got ${positionals.length}`);
  const modes = [values.wait, values["no-wait"], values.timeout !== undefined].filter(Boolean).length;
  if (modes > 1) throw new UsageError("choose one of --wait, --timeout and --no-wait");
  const key = parseKey(positionals[0] as string, keyFormat(values));
  const timeout = values.timeout === undefined ? undefined : parseDuration(values.timeout, "--timeout");
  const busyCode =
    values["busy-exit-code"] === undefined ? EXIT_BUSY : parseExitCode(values["busy-exit-code"], "--busy-exit-code");
  const lostCode =
    values["lost-exit-code"] === undefined ? EXIT_LOST : parseExitCode(values["lost-exit-code"], "--lost-exit-code");
  const killAfter = values["kill-after"] === undefined ? 10_000 : parseDuration(values["kill-after"], "--kill-after");
  const atLeastMs = values["at-least"] === undefined ? undefined : parseDuration(values["at-least"], "--at-least");
  const atMostMs = values["at-most"] === undefined ? undefined : parseDuration(values["at-most"], "--at-most");
  if (values.shared && (atLeastMs !== undefined || atMostMs !== undefined)) {
    throw new UsageError("--at-least and --at-most bound one run: they need an exclusive lock, not --shared");
  }
  if (atLeastMs !== undefined && atMostMs !== undefined && atLeastMs > atMostMs) {
    throw new UsageError("--at-least must not be longer than --at-most");
  }
  // --at-most is enforced here, not by the Locker's atMostMs: the key is freed only once the command
  // has stopped (SIGTERM, then SIGKILL after --kill-after), so that a next run never overlaps it.
  const runLength = atLeastMs === undefined ? {} : { atLeastMs };

  // The pool is the Locker's alone, but a Locker leaves one connection of any pool to its application.
  const pool = makePool(values.database, 3, timeout === undefined || timeout === 0 ? undefined : timeout);
  let reached = false;
  pool.on("connect", () => {
    reached = true;
  });
  const locker = createLocker(pool, { maxSessions: 2 });
  // A signal while waiting for the lock gives up the wait (the command never starts); once the
  // command runs, signals go to it. One listener serves the whole run: removing a signal's last
  // listener restores its default action, so swapping a "give up" listener for a "forward" one left a
  // moment, spawning the command included, when a signal killed pglock instead of reaching the command.
  const waiting = new AbortController();
  let onSignal = (signal: NodeJS.Signals) => waiting.abort(signal);
  const relay = (signal: NodeJS.Signals) => onSignal(signal);
  const stopRelaying = () => {
    for (const signal of FORWARDED) process.off(signal, relay);
  };
  for (const signal of FORWARDED) process.on(signal, relay);
  try {
    let handle: Awaited<ReturnType<typeof locker.acquire>> | null;
    try {
      handle = values["no-wait"]
        ? await locker.tryAcquire(key, { shared: values.shared ?? false, signal: waiting.signal, ...runLength })
        : await locker.acquire(key, { shared: values.shared ?? false, timeout, signal: waiting.signal, ...runLength });
    } catch (error) {
      if (error instanceof LockTimeoutError && !reached) {
        // Busy means someone holds the lock; a server never reached is unavailable.
        io.error(`pglock: cannot reach the database within ${values.timeout}`);
        return EXIT_UNAVAILABLE;
      }
      if (error instanceof LockTimeoutError) {
        io.error(
          `pglock: lock ${key} is busy: ${values.timeout === undefined ? "the server ended the wait" : `not acquired within ${values.timeout}`}`,
        );
        return busyCode;
      }
      if (waiting.signal.aborted) return exitCodeFor(waiting.signal.reason);
      io.error(`pglock: cannot reach the database: ${describeFailure(error)}`);
      return EXIT_UNAVAILABLE;
    }
    if (!handle) {
      io.error(`pglock: lock ${key} is busy`);
      return busyCode;
    }
    try {
      // A signal between the grant and now: the command never starts.
      if (waiting.signal.aborted) return exitCodeFor(waiting.signal.reason);
      const bounds = { killAfter, lostCode, atMostMs, atMost: values["at-most"] };
      return await runHolding(command, handle.signal, bounds, io, (forward) => {
        onSignal = forward;
      });
    } finally {
      // The command has ended: a signal from here on ends pglock, as it would any process, even if
      // the release hangs on a dead connection (the server frees the lock when the session ends).
      stopRelaying();
      await settleWithin(CLEANUP_MS, handle.release());
    }
  } finally {
    stopRelaying();
    // A release or a connect that hangs (a dead or silent server) must not keep pglock alive: the
    // server frees the lock when the session ends, and the session ends when pglock exits.
    await settleWithin(
      CLEANUP_MS,
      locker.close().then(() => pool.end()),
    );
  }
}

/** The longest pglock waits to clean up after the command (release, close, end of the pool). */
const CLEANUP_MS = 5_000;

/**
 * A small shell process that outlives pglock only to stop the command: when pglock dies without a
 * word (SIGKILL, a crash), its end of the pipe closes, and the guardian sends the command's process
 * group SIGTERM, then SIGKILL after `killAfter`. When the command has ended, pglock stands it down.
 * It runs in a group of its own, so a signal to pglock's group does not take it along.
 */
function guard(groupId: number, killAfter: number): { stand(): void } | undefined {
  const script =
    'if read -r _; then exit 0; fi; kill -TERM -"$1" 2>/dev/null || exit 0; sleep "$2"; kill -KILL -"$1" 2>/dev/null; exit 0';
  let guardian: ReturnType<typeof spawn>;
  try {
    guardian = spawn("sh", ["-c", script, "pglock-guardian", String(groupId), String(Math.ceil(killAfter / 1000))], {
      stdio: ["pipe", "ignore", "ignore"],
      detached: true,
    });
  } catch {
    return undefined; // no sh: the command is still stopped on every path but pglock's own SIGKILL
  }
  guardian.on("error", () => {});
  guardian.stdin?.on("error", () => {});
  guardian.unref();
  (guardian.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  return {
    stand() {
      guardian.stdin?.end("done\n");
    },
  };
}

/** A shell's exit code for a process ended by `signal`: 128 + its number. */
function exitCodeFor(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/**
 * Runs the command; `forwardSignals` gets the function that signals it, in the same tick as the spawn;
 * a lost lock, or `atMostMs` passed, stops it (SIGTERM, then SIGKILL after `killAfter`) and the run
 * exits `lostCode`.
 */
function runHolding(
  command: string[],
  lost: AbortSignal,
  bounds: { killAfter: number; lostCode: number; atMostMs: number | undefined; atMost: string | undefined },
  io: { error(line: string): void },
  forwardSignals: (forward: (signal: NodeJS.Signals) => void) => void,
): Promise<number> {
  const { killAfter, lostCode, atMostMs } = bounds;
  return new Promise((resolve) => {
    // The command runs in a process group of its own, and signals go to the whole group: commands run
    // under `sh -c` or `npm run` have grandchildren, which must not outlive the lock (issue #26).
    // Windows has no process groups: there, signals reach the command only.
    const groups = process.platform !== "win32";
    const child = spawn(command[0] as string, command.slice(1), { stdio: "inherit", detached: groups });
    const guardian = groups && child.pid !== undefined ? guard(child.pid, killAfter) : undefined;
    // process.kill, not child.kill: Deno's child_process reports any child it kill()ed as ended by
    // that signal, even when the child trapped it and exited with a code of its own (issue #13).
    const signalChild = (signal: NodeJS.Signals) => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(groups ? -child.pid : child.pid, signal);
      } catch {} // it has just exited: its exit event is on the way
    };
    forwardSignals(signalChild);
    let killTimer: NodeJS.Timeout | undefined;
    let stopped = false;
    const stop = (why: string) => {
      if (stopped) return;
      stopped = true;
      io.error(`pglock: ${why}; stopping it`);
      signalChild("SIGTERM");
      killTimer = setTimeout(() => signalChild("SIGKILL"), killAfter);
    };
    const onLost = () => stop(`the lock was lost while the command ran (${(lost.reason as Error).message})`);
    lost.addEventListener("abort", onLost, { once: true });
    const atMostTimer =
      atMostMs === undefined
        ? undefined
        : setTimeout(() => stop(`the command ran past --at-most ${bounds.atMost}`), atMostMs);
    const finish = (code: number) => {
      guardian?.stand();
      lost.removeEventListener("abort", onLost);
      clearTimeout(killTimer);
      clearTimeout(atMostTimer);
      resolve(stopped ? lostCode : code);
    };
    child.on("error", (error) => {
      io.error(`pglock: cannot run ${JSON.stringify(command[0])}: ${error.message}`);
      finish(127);
    });
    child.on("exit", (code, signal) => finish(code ?? (signal ? exitCodeFor(signal) : 128)));
  });
}
