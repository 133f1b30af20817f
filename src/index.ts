export {
  ClosedError,
  ConnectionError,
  DatabaseError,
  DeadlockError,
  InvalidArgumentError,
  InvalidLockKeyError,
  LockLostError,
  LockNotHeldError,
  LockTableFullError,
  LockTimeoutError,
  PglockError,
  type PglockErrorCode,
  ReadOnlyServerError,
} from "./errors.js";
export { hashKey, LockKey, type LockKeyInput, lockKey } from "./key.js";
export { type CallOptions, Lock, type NewLockOptions, newLock } from "./lock.js";
