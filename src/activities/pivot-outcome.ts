import { log } from '@temporalio/activity';

import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { readPivotRecord } from '../storage/pivot-record';
import type { DiskStep } from './inputs';

/**
 * Which volume holds the guest's newest data after a VM stopped in an active commit:
 * - `top`: no pivot was asked for; the mirror only copies behind the guest, so the base may lag;
 * - `base`: QEMU confirmed the pivot, or it may have pivoted and the two read the same: the guest
 *   wrote to the base since (the top is stale), or wrote nothing that differs.
 * Asked for and unconfirmed while the two differ, it cannot be told: PivotOutcomeUnknown, and
 * nothing is touched. Never decided by the chain a caller-held definition still names.
 */
export async function newestVolume(
  storageRoot: string,
  step: DiskStep,
  sameGuestData: (top: string, base: string) => Promise<boolean>,
): Promise<'top' | 'base'> {
  const record = await readPivotRecord(storageRoot, step.diskId, step.topVolumeId);
  if (record === undefined) return 'top';
  if (record.confirmedAt !== undefined) return 'base';
  const top = volumePath(storageRoot, step.diskId, step.topVolumeId);
  const base = volumePath(storageRoot, step.diskId, step.baseVolumeId);
  if (await sameGuestData(top, base)) {
    log.info('pivot unconfirmed, top and base read the same: the base is the active volume', { ...step });
    return 'base';
  }
  throw failure(
    'PivotOutcomeUnknown',
    `disk ${step.diskId}: the VM stopped between the pivot request (${record.requestedAt}) and QEMU's confirmation, and ${step.topVolumeId} and ${step.baseVolumeId} hold different data: if QEMU pivoted, the guest's newest writes are in ${step.baseVolumeId} (start from it); if not, in ${step.topVolumeId} (start from it). Which one cannot be told from what QEMU left; both are kept, nothing was written or deleted`,
  );
}
