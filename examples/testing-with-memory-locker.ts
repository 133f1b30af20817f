// Testing your own code without a database: the in-memory Locker has the Locker's methods and
// semantics, and simulateLoss() plays a dead session.
import { type AnyLocker, createMemoryLocker, LockLostError, type MemoryLocker } from "pglock";

/** The code under test, written against any Locker: runs a job once across instances, and stops if the lock is lost. */
async function runNightlyJob(locker: AnyLocker, work: (signal: AbortSignal) => Promise<string>) {
  const result = await locker.tryWithLock("nightly-job", work);
  return result.acquired ? result.value : "skipped";
}

const locker: MemoryLocker = createMemoryLocker();
const other = createMemoryLocker({ server: locker.server }); // a second "instance" on the same "database"

console.log("alone:", await runNightlyJob(locker, async () => "done"));

const held = await other.acquire("nightly-job");
console.log("while another instance runs it:", await runNightlyJob(locker, async () => "done"));
await held.release();

const lost = await runNightlyJob(locker, async (signal) => {
  locker.simulateLoss("nightly-job");
  return signal.aborted ? "noticed the loss" : "did not notice";
}).catch((error: unknown) => (error instanceof LockLostError ? "rejected with LockLostError" : String(error)));
console.log("when the lock is lost mid-job:", lost);
if (lost !== "rejected with LockLostError") throw new Error("a lost lock must reject");
await Promise.all([locker.close(), other.close()]);
