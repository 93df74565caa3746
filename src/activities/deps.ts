import type { HypervisorDriver } from '../host/driver';

/** What a host agent gives its activities. */
export interface HostDeps {
  hostId: string;
  storageRoot: string;
  driver: HypervisorDriver;
}
