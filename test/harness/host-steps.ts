import { createHostActivities, type HostActivities } from '../../src/activities';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { Reclaimer } from '../../src/storage/reclaim';
import type { VolumeUsage } from '../../src/volume-users';

/** The host steps as an agent gives them, over `driver`, on the storage root `root` (its QMP sockets there too). */
export function hostSteps(root: string, driver: HypervisorDriver, usage: VolumeUsage): HostActivities {
  return createHostActivities({
    hostId: 'h1',
    storageRoot: root,
    runDir: root,
    driver,
    reclaimer: new Reclaimer(root),
    usage,
  });
}
