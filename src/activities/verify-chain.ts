import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { volumeNames } from '../drivers/driver';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type DiskStep, diskStepSchema } from './inputs';

export interface ChainVerified {
  chain: string[];
}

/**
 * Reads the chain from the running QEMU: passes only when top is gone and base is present.
 * Anything else ends the merge, and the top volume is kept.
 */
export function createVerifyChain(deps: HostDeps) {
  return async function verifyChain(input: DiskStep): Promise<ChainVerified> {
    const step = parseInput(diskStepSchema, input);
    return translateHostErrors(async () => {
      const chain = await deps.driver.readChain(step.vmId, step.diskId);
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
