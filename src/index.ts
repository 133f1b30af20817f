export type { LockDatabase, PgClientLike, PgPoolLike, PoolDatabase, SqlTagLike } from "./database.js";
export {
  AlreadyHeldError,
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
export type { OwnerKind, SessionOwner } from "./identity.js";
export { hashKey, LockKey, type LockKeyInput, lockKey } from "./key.js";
export { createLeaseLocker, type LeaseHandle, LeaseLocker, type LeaseLockerOptions } from "./lease/locker.js";
export type { QueryFunction } from "./lease/query.js";
export { leaseTableSql } from "./lease/sql.js";
export type { LivenessOptions } from "./liveness.js";
export { type CallOptions, Lock, type NewLockOptions, newLock, type WaitOptions } from "./lock.js";
export { type AcquireAllOptions, LockGroup, type TaskOptions } from "./locker/compose.js";
export {
  type AcquiredEvent,
  type AcquireEndEvent,
  type AcquireOutcome,
  type AcquireStartEvent,
  channels,
  type LostEvent,
  type ReleasedEvent,
} from "./locker/events.js";
export { fencingTableSql } from "./locker/fencing.js";
export type { LockHandle } from "./locker/handle.js";
export {
  type AcquireOptions,
  createLocker,
  Locker,
  type LockerOptions,
  type LockerStats,
  type TryAcquireOptions,
} from "./locker/locker.js";
export { type AdvisoryLockInfo, type InspectOptions, inspectLocks } from "./patterns/inspect.js";
export { LeaderElection, type LeaderElectionEvents } from "./patterns/leader.js";
export { Semaphore, type SemaphoreAcquireOptions, type SemaphoreHandle } from "./patterns/semaphore.js";
export { withXactLock, type XactLockOptions } from "./patterns/xact.js";
export {
  createMemoryLocker,
  MemoryLocker,
  type MemoryLockerOptions,
  MemoryLockServer,
} from "./testing/memory-locker.js";
