import type { HypervisorDriver } from '../drivers/driver';
import type { Reclaimer } from '../storage/reclaim';
import type { VolumeUsage } from '../volume-users';

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
