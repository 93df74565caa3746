import { type ApplicationFailure, CancellationScope, isCancellation, proxyActivities } from '@temporalio/workflow';

import type { HostActivities } from '../activities';
import type { MergeStarted } from '../activities/merge';
import { hostTaskQueue } from '../config/names';
import { hostStepOptions, offlineCommitOptions } from '../config/policy';
import type { CommitKind } from '../domain/commit';
import type { DiskMergeInput } from '../domain/input';
import type { DiskMerged } from '../domain/outcome';
import type { DiskProgress } from '../domain/progress';
import { tagModeAndActive } from './search-attributes';

export interface OfflineMerge {
  input: DiskMergeInput;
  started: Extract<MergeStarted, { outcome: 'offline' }>;
  report: (p: Omit<DiskProgress, 'diskId'>) => Promise<void>;
  /** Dismisses what is left, records the reason, and fails the disk with the top kept. */
  failed: (err: unknown) => Promise<ApplicationFailure>;
  stats: { bytesCommitted: number };
  /**
   * The VM stopped during the live steps (the result says so, and whether its top was stale): the
   * kind and the chain of the live job, when it had started; a merge its job finished is `merged`.
   */
  stoppedMidMerge?: { liveKind: CommitKind | undefined; chainBefore: string[] | undefined };
}

/**
 * One disk of a VM that does not run: commit (qemu-img, under the images' locks), relink (the
 * layer above onto the base, or the definition to the base), verify the chain the VM would open,
 * delete the top. Until the commit has ended, a cancel stops qemu-img and leaves the chain
 * readable with the top kept; after it, the merge is finished whatever happens. A top the VM left
 * by a pivot before it stopped is stale: it is not committed, only taken out and deleted.
 */
export async function mergeOffline({
  input,
  started,
  report,
  failed,
  stats,
  stoppedMidMerge,
}: OfflineMerge): Promise<DiskMerged> {
  const { vmId, hostId, disk, options } = input;
  const taskQueue = hostTaskQueue(hostId);
  const host = proxyActivities<HostActivities>({ ...hostStepOptions, taskQueue });
  const hostCommit = proxyActivities<HostActivities>({ ...offlineCommitOptions, taskQueue });
  const step = { vmId, diskId: disk.diskId, baseVolumeId: disk.baseVolumeId, topVolumeId: disk.topVolumeId };
  const { kind } = started;
  const pivoted = started.pivoted === true;
  // An active job's top already out of what the VM opens (libvirt pointed its definition at the base): pivoted too.
  const topStale = pivoted || (kind === undefined && stoppedMidMerge?.liveKind === 'active');
  const stopped = stoppedMidMerge ? { stoppedMidMerge: { topStale } } : {};
  tagModeAndActive('offline', []);

  try {
    if (kind !== undefined && !pivoted) {
      await report({ phase: 'committing', commitKind: kind, mode: 'offline' });
      const committed = await hostCommit.offlineCommit.executeWithOptions(
        { summary: `commit ${disk.topVolumeId} into ${disk.baseVolumeId} on ${disk.diskId} offline (qemu-img)` },
        [
          {
            ...step,
            kind,
            bandwidthBytesPerSec: options.bandwidthBytesPerSec,
            ...(input.parentWorkflowId === undefined ? {} : { progressWorkflowId: input.parentWorkflowId }),
          },
        ],
      );
      stats.bytesCommitted = committed.bytes;
    }
  } catch (err) {
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(() =>
        report({
          phase: 'cancelled',
          reason: 'merge cancelled; the offline commit was stopped, the chain is readable',
        }),
      );
      throw err;
    }
    throw await failed(err);
  }

  // The commit has ended: from here on the merge is finished even if cancelled.
  return CancellationScope.nonCancellable(async () => {
    try {
      if (kind !== undefined) {
        await report({ phase: 'relinking', commitKind: kind, mode: 'offline' });
        await host.offlineRelink.executeWithOptions(
          {
            summary:
              kind === 'active'
                ? `point ${disk.diskId} at ${disk.baseVolumeId} (the VM's definition, or the result for its caller)`
                : `rebase the layer above ${disk.topVolumeId} onto ${disk.baseVolumeId}`,
          },
          [{ ...step, kind }],
        );
      }
      const verified = await host.verifyChain.executeWithOptions(
        { summary: `verify the chain ${disk.diskId} opens: ${disk.topVolumeId} gone, ${disk.baseVolumeId} present` },
        [{ ...step, offline: true }],
      );
      const deleted = await host.deleteVolume.executeWithOptions(
        { summary: `delete volume ${disk.topVolumeId} of ${disk.diskId}` },
        [{ ...step, offline: true }],
      );
      const doneKind = kind ?? stoppedMidMerge?.liveKind;
      const outcome = doneKind === undefined ? 'alreadyMerged' : 'merged';
      const activeVolumeId = verified.chain[0];
      tagModeAndActive('offline', [{ diskId: disk.diskId, activeVolumeId }]);
      await report({ phase: outcome, commitKind: doneKind, mode: 'offline', activeVolumeId, ...stopped });
      return {
        diskId: disk.diskId,
        outcome,
        ...(doneKind === undefined ? {} : { commitKind: doneKind }),
        chainBefore: stoppedMidMerge?.chainBefore ?? started.chain,
        chainAfter: verified.chain,
        topDeleted: deleted.deleted,
        mode: 'offline',
        activeVolumeId,
        ...stopped,
      };
    } catch (err) {
      throw await failed(err);
    }
  });
}
