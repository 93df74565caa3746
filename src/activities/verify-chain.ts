import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { type DiskChain, volumeNames } from '../drivers/driver';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type CheckStep, checkStepSchema } from './inputs';
import { readOfflineChain } from './offline-chain';

export interface ChainVerified {
  chain: string[];
}

/**
 * Reads the chain from the running QEMU (an offline merge's: from what the stopped VM would open,
 * or from its QEMU if it started since): passes only when top is gone and base is present.
 * Anything else ends the merge, and the top volume is kept.
 */
export function createVerifyChain(deps: HostDeps) {
  return async function verifyChain(input: CheckStep): Promise<ChainVerified> {
    const step = parseInput(checkStepSchema, input);
    return translateHostErrors(async () => {
      const chain = await readStepChain(deps, step);
      const paths = chain.volumes.map((v) => v.path);
      const names = volumeNames(chain);
      const topStill = paths.includes(volumePath(deps.storageRoot, step.diskId, step.topVolumeId));
      const baseThere = paths.includes(volumePath(deps.storageRoot, step.diskId, step.baseVolumeId));
      if (topStill || !baseThere) {
        const why = topStill
          ? `top volume ${step.topVolumeId} is still in the chain`
          : `base volume ${step.baseVolumeId} is missing from the chain`;
        throw failure(
          'ChainVerificationFailed',
          `chain check failed on disk ${step.diskId}: ${why} (${names.join(' -> ')}); volume kept`,
          {
            chain: names,
          },
        );
      }
      return { chain: names };
    });
  };
}

/** The disk's chain the VM runs, or (an offline merge's step, the VM stopped) the one it would open. */
export async function readStepChain(deps: HostDeps, step: CheckStep): Promise<DiskChain> {
  const vm = step.offline ? await deps.driver.vmState(step.vmId) : undefined;
  if (vm === undefined || vm.running) return deps.driver.readChain(step.vmId, step.diskId);
  const top = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
  return readOfflineChain(deps, step.vmId, step.diskId, step.baseVolumeId, vm, { committedTop: top });
}
