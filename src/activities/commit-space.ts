import type { CommitSpace } from '../domain/commit';
import { failure } from '../domain/failures';

/**
 * InsufficientSpace unless the base's file system has room for what the commit can add to the base,
 * with the margin; one rule for the live and the offline commit. `untouched` ends the message.
 */
export function refuseShortSpace(
  space: CommitSpace,
  step: { diskId: string; topVolumeId: string; baseVolumeId: string },
  untouched: string,
): void {
  if (space.freeBytes >= space.neededBytes) return;
  throw failure(
    'InsufficientSpace',
    `not enough space to commit ${step.topVolumeId} into ${step.baseVolumeId} on disk ${step.diskId}: needs ${space.neededBytes} bytes ` +
      `(${space.growthBytes} the commit can add to the base, for ${space.topAllocatedBytes} bytes allocated in the top, ` +
      `plus a margin of ${space.marginBytes}), ${space.freeBytes} bytes free in ${space.baseDir}; ${untouched}`,
    space,
  );
}
