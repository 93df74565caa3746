import * as path from 'node:path';

import { STOPPED_VM_LOCKS_POLL_MS, STOPPED_VM_LOCKS_SETTLE_MS } from '../config/policy';
import { failure } from '../domain/failures';
import type { DiskChain } from '../drivers/driver';
import { describeUser, type VolumeUsers, type VolumeUsersQuery } from '../volume-users';
import type { HostDeps } from './deps';

/**
 * The refusals that keep a merge from writing into, or deleting, a volume anything else uses
 * (DESIGN.md rule 10), on the whole host: images anywhere under the storage root that name it as
 * backing, processes that hold it open or locked. Checked before the commit starts and again
 * before the delete (time passed; something may have started using it).
 */

/**
 * Before a new block job: the base may be used by this disk's chain alone, the top by the layer
 * above it alone, and both by nothing but the VM's QEMU. Otherwise BaseShared / VolumeInUse.
 */
export async function guardCommit(
  deps: HostDeps,
  vmId: string,
  chain: DiskChain,
  top: number,
  base: number,
  vmStopped = false,
): Promise<void> {
  // A stopped VM has no hypervisor process: nothing may hold its volumes.
  const qemu = vmStopped ? [] : await deps.driver.hypervisorPids(vmId);
  const [topUse, baseUse] = await usersOf(
    deps,
    [
      {
        volume: chain.volumes[top].path,
        expectedImages: top > 0 ? [chain.volumes[top - 1].path] : [],
        expectedPids: qemu,
      },
      { volume: chain.volumes[base].path, expectedImages: chain.volumes.map((v) => v.path), expectedPids: qemu },
    ],
    vmStopped,
  );
  refuseUsed(baseUse, 'BaseShared', `base volume ${nameOf(baseUse)} of disk ${chain.diskId} is used outside its chain`);
  refuseUsed(topUse, 'VolumeInUse', `top volume ${nameOf(topUse)} of disk ${chain.diskId} is used outside its chain`);
}

/** Before the delete: nothing but the VM's QEMU (which lets go of it next) may use the top. */
export async function guardDelete(
  deps: HostDeps,
  vmId: string,
  file: string,
  diskId: string,
  vmStopped = false,
): Promise<void> {
  const expectedPids = vmStopped ? [] : await deps.driver.hypervisorPids(vmId);
  const [use] = await usersOf(deps, [{ volume: file, expectedPids }], vmStopped);
  refuseUsed(use, 'VolumeInUse', `volume ${nameOf(use)} of disk ${diskId} is still used`);
}

/**
 * The users of each volume. A VM that stopped a moment ago may still hold locks: the kernel drops a
 * killed QEMU's image locks in deferred work after its fds are gone (measured 1-4 ms after its QMP
 * socket refused, later on a busy host). So for a stopped VM, when the only users are locks no
 * visible process holds, the guard looks again for up to STOPPED_VM_LOCKS_SETTLE_MS; locks that
 * stay are refused as any other.
 */
async function usersOf(deps: HostDeps, queries: VolumeUsersQuery[], vmStopped: boolean): Promise<VolumeUsers[]> {
  const deadline = Date.now() + STOPPED_VM_LOCKS_SETTLE_MS;
  for (;;) {
    const { results } = await deps.usage.findUsersOfEach(queries);
    const users = results.flatMap((r) => r.users);
    const onlyLocksOfNoOne = users.length > 0 && users.every((u) => u.kind === 'lockedBy' && u.pid === null);
    if (!vmStopped || !onlyLocksOfNoOne || Date.now() >= deadline) return results;
    await new Promise((r) => setTimeout(r, STOPPED_VM_LOCKS_POLL_MS));
  }
}

function refuseUsed(use: VolumeUsers, type: 'BaseShared' | 'VolumeInUse', what: string): void {
  if (use.users.length === 0) return;
  const why = use.users.map(describeUser).join('; ');
  // An image whose header cannot be read, or whose name cannot be tied to a file here, might name
  // the volume: nothing can be decided.
  if (use.users.every((u) => u.kind === 'unreadable')) {
    throw failure('CorruptImageHeader', `${what}?: ${why}; nothing was touched`, { users: use.users });
  }
  if (use.users.every((u) => u.kind === 'unreadable' || u.kind === 'unresolvedName')) {
    throw failure('UnresolvedImageName', `${what}?: ${why}; nothing was touched`, { users: use.users });
  }
  throw failure(type, `${what}: ${why}; nothing was touched`, { users: use.users });
}

function nameOf(use: VolumeUsers): string {
  return path.basename(use.volume, '.qcow2');
}
