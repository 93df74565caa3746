import type { HypervisorDriver } from '../host/driver';
import type { Reclaimer } from '../host/reclaim';

/** What a host agent gives its activities. */
export interface HostDeps {
  hostId: string;
  storageRoot: string;
  driver: HypervisorDriver;
  /** Frees deleted volumes' space after their delete step. */
  reclaimer: Reclaimer;
}
