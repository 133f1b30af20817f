export {
  type AdvisoryLockInfo,
  type InspectLeasesOptions,
  type InspectOptions,
  inspectLeaders,
  inspectLeases,
  inspectLocks,
  type LeaderInfo,
  type LeaseInfo,
} from "./advisory/inspect.js";
export { createLocker, Locker, type LockerOptions } from "./advisory/locker.js";
export { type RevokeOptions, type RevokeResult, revokeLock, type StuckHolder } from "./advisory/revoke.js";
export { withXactLock, type XactLockOptions } from "./advisory/xact.js";
export { LockGroup } from "./contract/compose.js";
export {
  type AcquiredEvent,
  type AcquireEndEvent,
  type AcquireOutcome,
  type AcquireStartEvent,
  channels,
  type LostEvent,
  type ReleasedEvent,
} from "./contract/events.js";
export type { LockHandle } from "./contract/handle.js";
export type {
  AcquireAllOptions,
  AcquireOptions,
  LockerStats,
  RunLengthOptions,
  TaskOptions,
  TryAcquireOptions,
  TryResult,
} from "./contract/options.js";
export type {
  LockDatabase,
  PgClientLike,
  PgPoolLike,
  PoolDatabase,
  SqlTagLike,
  SqlTransactionLike,
  TransactionDatabase,
} from "./database.js";
export {
  AlreadyHeldError,
  ClosedError,
  ConnectionError,
  DatabaseError,
  DeadlockError,
  InvalidArgumentError,
  InvalidLockKeyError,
  LockExpiredError,
  LockLostError,
  LockNotHeldError,
  LockTableFullError,
  LockTimeoutError,
  PglockError,
  type PglockErrorCode,
  ReadOnlyServerError,
  RevokedError,
} from "./errors.js";
export type { OwnerKind, SessionOwner } from "./identity.js";
export { hashKey, LockKey, type LockKeyInput, lockKey } from "./key.js";
export type { LeaseHandle } from "./lease/lease.js";
export { createLeaseLocker, LeaseLocker, type LeaseLockerOptions } from "./lease/locker.js";
export type { QueryFunction, QueryResult } from "./lease/query.js";
export type { LivenessOptions } from "./liveness.js";
export { type CallOptions, Lock, type NewLockOptions, newLock, type WaitOptions } from "./lock.js";
export type { AnyLocker } from "./locker/facade.js";
export { createMemoryLocker, MemoryLocker, type MemoryLockerOptions, MemoryLockServer } from "./memory/locker.js";
export {
  LeaderElection,
  type LeaderElectionEvents,
  type LeaderElectionOptions,
  type LeaderRunOptions,
  type Leadership,
  type LeaderTerm,
  type ObserveOptions,
  type ResignOptions,
} from "./patterns/leader.js";
export {
  Semaphore,
  type SemaphoreAcquireOptions,
  type SemaphoreHandle,
  type SemaphoreHolder,
  type SemaphoreTryAcquireOptions,
} from "./patterns/semaphore.js";
export { fencingTableSql } from "./sql/fencing.js";
export { leaseTableSql } from "./sql/lease.js";
