import { InvalidLockKeyError } from "./errors.js";
import { redact } from "./redact.js";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** How a lock is held: `shared` holders coexist; an `exclusive` holder excludes everyone. */
export type LockMode = "exclusive" | "shared";

/** What a lock key may be written as; see {@link lockKey}. */
export type LockKeyInput = bigint | number | string | readonly [number, number] | LockKey;

/**
 * A validated advisory-lock key. PostgreSQL has two key spaces that never meet: one int64
 * (`pg_advisory_lock(bigint)`) and pairs of int32 (`pg_advisory_lock(int, int)`), so `0` and
 * `[0, 0]` are different locks. https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
 */
export class LockKey {
  /** The int64 key, or undefined for a pair key. */
  readonly id: bigint | undefined;
  /** The int32 pair, or undefined for an int64 key. */
  readonly pair: readonly [number, number] | undefined;
  /** The name this key was hashed from, when it came from a string. */
  readonly name: string | undefined;
  /** A string that is equal for equal keys and different for different keys (both key spaces). */
  readonly identity: string;

  private constructor(id: bigint | undefined, pair: readonly [number, number] | undefined, name?: string) {
    this.id = id;
    this.pair = pair;
    this.name = name;
    this.identity = pair ? `${pair[0]},${pair[1]}` : String(id);
    Object.freeze(this);
  }

  /** @internal */
  static fromId(id: bigint, name?: string): LockKey {
    return new LockKey(id, undefined, name);
  }
  /** @internal */
  static fromPair(a: number, b: number): LockKey {
    return new LockKey(undefined, Object.freeze([a, b] as const), undefined);
  }

  /** How the key reads in messages: `42`, `(1,2)` or `"cleanup-task" (-7671976228194938313)`. */
  toString(): string {
    if (this.pair) return `(${this.pair[0]},${this.pair[1]})`;
    return this.name === undefined ? String(this.id) : `${JSON.stringify(this.name)} (${this.id})`;
  }
}

const FNV_OFFSET_BASIS = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK_64 = 2n ** 64n - 1n;
const utf8 = new TextEncoder();

/**
 * The int64 key a name stands for: FNV-1a 64 over the name's UTF-8 bytes, read as a signed int64.
 * This is the `hashToInt64` of go-pglock's README, so Go and Node services that name a lock alike
 * contend on the same lock. `hashKey("cleanup-task") === -7671976228194938313n`.
 */
export function hashKey(name: string): bigint {
  if (typeof name !== "string") {
    throw new InvalidLockKeyError(`hashKey expects a string name, got ${describe(name)}`);
  }
  let hash = FNV_OFFSET_BASIS;
  for (const byte of utf8.encode(name)) {
    hash = ((hash ^ BigInt(byte)) * FNV_PRIME) & MASK_64;
  }
  return BigInt.asIntN(64, hash);
}

/**
 * Validates and normalizes a key. Accepted: a bigint in [-2^63, 2^63-1]; a safe-integer number;
 * a string (a name, hashed by {@link hashKey}); a pair `[a, b]` of int32 (PostgreSQL's two-key
 * form, a separate key space). Anything else throws {@link InvalidLockKeyError}.
 */
export function lockKey(input: LockKeyInput): LockKey {
  if (input instanceof LockKey) return input;
  switch (typeof input) {
    case "bigint":
      if (input < INT64_MIN || input > INT64_MAX) {
        throw new InvalidLockKeyError(`lock key ${input}n is outside int64: it must be in [-2^63, 2^63-1]`);
      }
      return LockKey.fromId(input);
    case "number":
      if (!Number.isSafeInteger(input)) {
        throw new InvalidLockKeyError(
          `lock key ${describe(input)} is not a safe integer: a number key must be an integer in ` +
            "[-(2^53-1), 2^53-1]; use a bigint for larger keys",
        );
      }
      return LockKey.fromId(BigInt(input));
    case "string":
      return namedKey(input);
    default:
      if (Array.isArray(input)) return pairKey(input);
      throw new InvalidLockKeyError(
        `lock key ${describe(input)} is not a key: use a bigint, a safe integer, a string name or a pair [int32, int32]`,
      );
  }
}

/**
 * Names this process hashed, most recent last, both ways: a name's key is computed once (FNV over
 * BigInt costs microseconds per name), and a key read back from pg_locks can show the name it came
 * from. A hash cannot be reversed: a key whose name this process never hashed shows no name.
 */
const keysByName = new Map<string, LockKey>();
const keysById = new Map<bigint, LockKey>();
const REMEMBERED_NAMES = 10_000;

function namedKey(name: string): LockKey {
  const known = keysByName.get(name);
  if (known) return known;
  const key = LockKey.fromId(hashKey(name), name);
  if (keysByName.size >= REMEMBERED_NAMES) {
    const [oldest] = keysByName.values();
    keysByName.delete(oldest?.name as string);
    keysById.delete(oldest?.id as bigint);
  }
  keysByName.set(name, key);
  keysById.set(key.id as bigint, key);
  return key;
}

/** The int64 key `id`, with its name when this process hashed one to it (see namedKey). */
export function keyFromId(id: bigint): LockKey {
  return keysById.get(id) ?? LockKey.fromId(id);
}

function pairKey(input: readonly unknown[]): LockKey {
  if (input.length !== 2) {
    throw new InvalidLockKeyError(`lock key pair ${describe(input)} has ${input.length} members: a pair has exactly 2`);
  }
  for (const member of input) {
    if (typeof member !== "number" || !Number.isInteger(member) || member < INT32_MIN || member > INT32_MAX) {
      throw new InvalidLockKeyError(
        `lock key pair ${describe(input)} has member ${describe(member)}: each member must be an integer in int32 [-2^31, 2^31-1]`,
      );
    }
  }
  return LockKey.fromPair(input[0] as number, input[1] as number);
}

/** A short rendering of any value for error messages (never throws). */
export function describe(value: unknown): string {
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string") {
    const shown = redact(value);
    return JSON.stringify(shown.length > 60 ? `${shown.slice(0, 57)}...` : shown);
  }
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return `[${value.map(describe).join(", ")}]`;
  if (typeof value === "symbol") return value.toString();
  const ctor = (value as object).constructor?.name;
  return ctor && ctor !== "Object" ? `a ${ctor}` : "an object";
}
