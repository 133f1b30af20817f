/**
 * Observability through node:diagnostics_channel: free when nobody subscribes (each publish is
 * guarded by hasSubscribers). https://nodejs.org/docs/latest-v20.x/api/diagnostics_channel.html
 */
import { channel } from "node:diagnostics_channel";
import type { LockKey } from "../key.js";

export interface AcquiredEvent {
  key: LockKey;
  shared: boolean;
  /** Milliseconds from the acquire call to the grant. */
  waitMs: number;
}
export interface ReleasedEvent {
  key: LockKey;
  shared: boolean;
  /** Milliseconds the lock was held. */
  heldMs: number;
}
export interface LostEvent {
  key: LockKey;
  shared: boolean;
  error: Error;
}

/** The channels pglock publishes on; subscribe with `diagnostics_channel.subscribe(name, fn)`. */
export const channels = {
  acquired: "pglock:acquired",
  released: "pglock:released",
  lost: "pglock:lost",
} as const;

const acquired = channel(channels.acquired);
const released = channel(channels.released);
const lost = channel(channels.lost);

export function publishAcquired(event: () => AcquiredEvent) {
  if (acquired.hasSubscribers) acquired.publish(event());
}
export function publishReleased(event: () => ReleasedEvent) {
  if (released.hasSubscribers) released.publish(event());
}
export function publishLost(event: () => LostEvent) {
  if (lost.hasSubscribers) lost.publish(event());
}
