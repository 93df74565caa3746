import {
  type ApplicationFailure,
  CancellationScope,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  proxyActivities,
  proxyLocalActivities,
  workflowInfo,
} from '@temporalio/workflow';

import type { HostActivities } from '../activities';
import { blockJobId, hostJobTaskQueue, hostTaskQueue } from '../config/names';
import { blockJobWaitOptions, hostStepOptions, localStepOptions, mergeStepOptions } from '../config/policy';
import { failure } from '../domain/failures';
import type { DiskMergeInput } from '../domain/input';
import type { DiskMerged } from '../domain/outcome';
import { childSignals } from '../domain/phases';
import type { DiskProgress } from '../domain/progress';
import { diskProgressSignal } from './definitions';
import {
  isPickupTimeout,
  nonRetryableTypeOf,
  parseWorkflowInput,
  reasonOf,
  unreachableReason,
  vmStopped,
} from './failures';
import { recordDiskMerge } from './metrics';
import { mergeOffline } from './offline-merge';
import { schemas } from './schemas';
import { tagMerge, tagModeAndActive, tagOutcome } from './search-attributes';

/**
 * One disk of a snapshot, top to bottom: merge (start or adopt the block commit), wait for the
 * block job (pivot when an active commit is ready), verify the chain, delete the top, clean up.
 * Until the block job has ended, a cancel cancels the job and leaves the chain as it was; after
 * it, the merge is finished whatever happens, so a merged top is never left behind undeleted.
 */
export async function DiskMergeWorkflow(request: DiskMergeInput): Promise<DiskMerged> {
  // LiveMergeWorkflow sends checked input, but this type can be started on its own: check again.
  const input: DiskMergeInput = parseWorkflowInput(schemas().input.diskMergeInputSchema, request, 'merge input');
  const stats = { bytesCommitted: 0 };
  tagMerge({ vmId: input.vmId, hostId: input.hostId, snapshotId: input.snapshotId, diskId: input.disk.diskId });
  try {
    const merged = await mergeDisk(input, stats);
    recordDiskMerge(input, merged.outcome, stats.bytesCommitted);
    tagOutcome('merged');
    return merged;
  } catch (err) {
    recordDiskMerge(input, isCancellation(err) ? 'cancelled' : 'failed', 0);
    tagOutcome(isCancellation(err) ? 'cancelled' : 'failed');
    throw err;
  }
}

/** The steps of DiskMergeWorkflow; `stats` gets what its metrics need. */
async function mergeDisk(input: DiskMergeInput, stats: { bytesCommitted: number }): Promise<DiskMerged> {
  const { vmId, hostId, disk, options } = input;
  const taskQueue = hostTaskQueue(hostId);
  // Started on the host's own queue (by merges since `disk-on-host`), this workflow runs in the
  // host agent: its short steps run there as local activities, without a server round trip each,
  // and its wait is handed back eagerly on the same queue. Started on the engine queue (merges
  // before that, or this type started on its own), every step is dispatched to the host.
  const onHost = workflowInfo().taskQueue === hostJobTaskQueue(hostId);
  const hostSteps = proxyActivities<HostActivities>({ ...hostStepOptions, taskQueue });
  const host = onHost ? proxyLocalActivities<HostActivities>(localStepOptions) : hostSteps;
  const hostMerge = onHost
    ? host
    : proxyActivities<HostActivities>({ ...mergeStepOptions(options.hostPickupTimeoutSeconds), taskQueue });
  // The wait holds its slot for the job's whole life: on a queue of its own, so that a host with
  // many running jobs still has free slots for every merge's short steps. Merges started before
  // that queue existed keep their waits on the steps' queue.
  const hostWait = (): ReturnType<typeof proxyActivities<HostActivities>> =>
    proxyActivities<HostActivities>({
      ...blockJobWaitOptions,
      taskQueue: onHost || patched('job-wait-queue') ? hostJobTaskQueue(hostId) : taskQueue,
    });
  const step = { vmId, diskId: disk.diskId, baseVolumeId: disk.baseVolumeId, topVolumeId: disk.topVolumeId };
  const jobStep = { vmId, diskId: disk.diskId, jobId: blockJobId(disk.diskId, disk.topVolumeId) };
  const report = progressReporter(input);
  // The host sets an adaptive job's speed; merges started before the adaptive mode run fixed.
  const adaptive = schemas().input.speedModeOf(options) === 'adaptive' && patched('adaptive-speed');

  // Merges started before the offline path refuse a VM that does not run (VmNotFound), as they did.
  const offlineKnown = patched('offline-merge');
  // A VM that stopped mid-merge is finished offline; merges started before that fail it, as they did.
  const stoppedMidMerge = (err: unknown): boolean => offlineKnown && vmStopped(err) && patched('stopped-mid-merge');

  // Set by the merge step; read only after it succeeded.
  let commitKind: DiskMerged['commitKind'];
  let chainBefore: string[];
  let mergedEarlier: boolean;
  // The offline steps handle their own failures and cancels.
  let offline = false;
  try {
    if (onHost && pickedUpLate(options.hostPickupTimeoutSeconds))
      throw failure(
        'HostUnreachable',
        `host ${hostId} picked up the merge after its pickup timeout (${options.hostPickupTimeoutSeconds} s): nothing was started`,
      );
    await report({ phase: 'merging' });
    const started = await hostMerge.merge.executeWithOptions(
      {
        summary: `commit ${disk.topVolumeId} into ${disk.baseVolumeId} on ${disk.diskId}: start or adopt the block job`,
      },
      [
        {
          ...step,
          bandwidthBytesPerSec: options.bandwidthBytesPerSec,
          ...(offlineKnown ? { allowOffline: true as const } : {}),
          ...(adaptive ? { adaptive: true as const } : {}),
        },
      ],
    );
    if (started.outcome === 'offline') {
      offline = true;
      return await mergeOffline({ input, started, report, failed, stats });
    }
    if (offlineKnown) tagModeAndActive('live', []);
    chainBefore = started.chain;
    mergedEarlier = started.outcome === 'alreadyMerged';
    if (started.outcome !== 'alreadyMerged') {
      commitKind = started.kind;
      await report({ phase: 'waiting', commitKind });
      const end = await hostWait().waitForBlockJob.executeWithOptions(
        {
          summary: `wait for block job ${jobStep.jobId} (${commitKind === 'active' ? 'active commit, pivot when ready' : `${commitKind} commit`})`,
        },
        [
          {
            ...jobStep,
            pollIntervalMs: options.pollIntervalMs,
            progressWorkflowId: input.parentWorkflowId,
            commitKind,
            convergence: options.convergence,
            ...(adaptive
              ? {
                  speed: {
                    latencyFactor: options.latencyFactor,
                    ...(started.outcome === 'started' && started.speedStart ? { start: started.speedStart } : {}),
                  },
                }
              : {}),
          },
        ],
      );
      if (end.outcome === 'concluded' && end.error !== undefined) {
        throw failure('BlockJobFailed', `block job ${jobStep.jobId} failed in QEMU: ${end.error}`);
      }
      if (end.outcome === 'concluded') stats.bytesCommitted = end.len;
    }
  } catch (err) {
    if (offline) throw err;
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(async () => {
        await report({ phase: 'cancelling' });
        await hostSteps.cancelBlockJob.executeWithOptions(
          { summary: `cancel block job ${jobStep.jobId}: merge cancelled` },
          [jobStep],
        );
        await host.cleanup.executeWithOptions({ summary: `clean up after block job ${jobStep.jobId}` }, [jobStep]);
        await report({ phase: 'cancelled', reason: 'merge cancelled; block job cancelled, chain unchanged' });
      });
      throw err;
    }
    if (stoppedMidMerge(err)) return finishOffline(err);
    throw await failed(err);
  }

  // The block job has ended: from here on the merge is finished even if cancelled.
  return CancellationScope.nonCancellable(async () => {
    try {
      await report({ phase: 'verifying' });
      const verified = await host.verifyChain.executeWithOptions(
        { summary: `verify chain of ${disk.diskId}: ${disk.topVolumeId} gone, ${disk.baseVolumeId} present` },
        [step],
      );
      await report({ phase: 'deleting' });
      const deleted = await host.deleteVolume.executeWithOptions(
        { summary: `delete volume ${disk.topVolumeId} of ${disk.diskId}` },
        [step],
      );
      await report({ phase: 'cleaning' });
      await host.cleanup.executeWithOptions({ summary: `clean up after block job ${jobStep.jobId}` }, [jobStep]);
      // An adopted job of ours that concluded before the adopt also merged: its chain already lacks the top.
      const outcome = mergedEarlier ? 'alreadyMerged' : 'merged';
      await report({ phase: outcome, commitKind });
      const activeVolumeId = verified.chain[0];
      if (offlineKnown) tagModeAndActive('live', [{ diskId: disk.diskId, activeVolumeId }]);
      return {
        diskId: disk.diskId,
        outcome,
        commitKind,
        chainBefore,
        chainAfter: verified.chain,
        topDeleted: deleted.deleted,
        ...(offlineKnown ? { mode: 'live' as const, activeVolumeId } : {}),
      };
    } catch (err) {
      if (stoppedMidMerge(err)) return finishOffline(err);
      throw await failed(err);
    }
  });

  /**
   * The VM stopped during the live steps: the merge step reads what it left (the images, the
   * pivot record) and the offline steps finish the disk. A VM that runs again meanwhile is refused
   * (VmStarted) and the top kept.
   */
  async function finishOffline(stopped: unknown): Promise<DiskMerged> {
    // A caller-held VM starts from where QEMU ran the disk (the live chain's first volume, a volume id).
    const liveActive = schemas().input.idSchema.safeParse(chainBefore?.[0]).data;
    let started;
    try {
      started = await hostMerge.merge.executeWithOptions(
        { summary: `VM ${vmId} stopped mid-merge (${reasonOf(stopped)}): finish ${disk.diskId} offline` },
        [
          {
            ...step,
            bandwidthBytesPerSec: options.bandwidthBytesPerSec,
            allowOffline: true,
            offlineOnly: true,
            ...(liveActive === undefined ? {} : { liveActive }),
          },
        ],
      );
    } catch (err) {
      throw await failed(err);
    }
    if (started.outcome !== 'offline') throw await failed(failure('VmStarted', `VM ${vmId} runs again`));
    return mergeOffline({
      input,
      started,
      report,
      failed,
      stats,
      stoppedMidMerge: { liveKind: commitKind, chainBefore },
    });
  }

  /** Dismisses what the job left, records the reason, and fails this disk with the top kept. */
  async function failed(err: unknown): Promise<ApplicationFailure> {
    const neverPickedUp = isPickupTimeout(err);
    const reason = neverPickedUp
      ? unreachableReason(hostId, options.hostPickupTimeoutSeconds, taskQueue)
      : reasonOf(err);
    await CancellationScope.nonCancellable(async () => {
      // Nothing reached a host that never picked up the merge, and nothing there needs cleaning.
      if (!neverPickedUp)
        await host.cleanup.executeWithOptions(
          { summary: `clean up after failed merge of ${disk.diskId}, keep ${disk.topVolumeId}` },
          [jobStep],
        );
      await report({ phase: 'failed', reason });
    });
    const type = neverPickedUp ? 'HostUnreachable' : (nonRetryableTypeOf(err) ?? 'DiskMergeFailed');
    return failure(type, `disk ${disk.diskId}: ${reason}; top volume ${disk.topVolumeId} kept`);
  }
}

/**
 * Whether this is the first task of a disk workflow that no host agent picked up within the pickup
 * timeout: the merge gave such a disk up (workflows/pickup.ts). Only a first pickup counts: a task
 * retried after an agent died mid-step (history longer than started, scheduled, started) was picked
 * up in time, and its disk goes on.
 */
function pickedUpLate(seconds: number): boolean {
  const info = workflowInfo();
  return info.historyLength <= 3 && Date.now() - info.startTime.getTime() > seconds * 1000;
}

/**
 * Tells the parent of the phases this child reports (domain/phases.ts says which): each awaited
 * signal costs a server round trip before the next step, so the others are left to the parent
 * and to the wait activity.
 */
function progressReporter(input: DiskMergeInput): (p: Omit<DiskProgress, 'diskId'>) => Promise<void> {
  return async (p) => {
    if (!input.parentWorkflowId) return;
    // Histories from before this change signalled these phases, and replay as they ran.
    if (!childSignals(p.phase) && patched('lean-progress-signals')) return;
    try {
      // Awaited: the history then has the same events however long the job ran.
      await getExternalWorkflowHandle(input.parentWorkflowId).signal(diskProgressSignal, {
        diskId: input.disk.diskId,
        ...p,
      });
    } catch {
      // Progress is for people watching; a parent that is gone must not fail the merge.
    }
  };
}
