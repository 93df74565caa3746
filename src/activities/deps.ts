import type { HypervisorDriver } from '../host/driver';
import type { Reclaimer } from '../host/reclaim';
import type { VolumeUsage } from '../host/usage';

/** What a host agent gives its activities. */
export interface HostDeps {
  hostId: string;
  storageRoot: string;
  /** Where the VMs' QMP sockets are: their QEMU is found by its socket. */
  runDir: string;
  driver: HypervisorDriver;
  /** Frees deleted volumes' space after their delete step. */
  reclaimer: Reclaimer;
  /** Who else uses a volume on this host (one per agent: it keeps an index of the images). */
  usage: VolumeUsage;
}
