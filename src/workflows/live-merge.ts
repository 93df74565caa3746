import {
  allHandlersFinished,
  CancellationScope,
  condition,
  executeChild,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';

import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, hostJobTaskQueue, liveMergeWorkflowId } from '../config/names';
import { failure } from '../domain/failures';
import type { LiveMergeRequest } from '../domain/input';
import type { DiskMerged, DiskOutcome, LiveMergeResult } from '../domain/outcome';
import { isForward, jobState } from '../domain/phases';
import type { DiskProgress } from '../domain/progress';
import { installBandwidthControl } from './bandwidth';
import { diskProgressSignal, progressQuery } from './definitions';
import { DiskMergeWorkflow } from './disk-merge';
import { nonRetryableTypeOf, parseWorkflowInput, reasonOf } from './failures';
import { PickupWatch } from './pickup';
import { schemas } from './schemas';
import { tagMerge, tagModeAndActive, tagOutcome } from './search-attributes';

/**
 * Removes one snapshot from a running VM: one DiskMergeWorkflow per disk, in parallel. Ends when
 * every disk has an outcome; fails when any disk failed, naming each one and its reason.
 */
export async function LiveMergeWorkflow(request: LiveMergeRequest): Promise<LiveMergeResult> {
  const input = parseWorkflowInput(schemas().input.liveMergeInputSchema, request, 'merge input');
  const { workflowId } = workflowInfo();
  if (workflowId !== liveMergeWorkflowId(input.snapshotId)) {
    throw failure(
      'InvalidMergeInput',
      `invalid merge input: workflowId must be ${liveMergeWorkflowId(input.snapshotId)} (one merge per snapshot), got ${workflowId}`,
    );
  }
  // First, before any disk is touched: a namespace without the attributes holds the merge here.
  tagMerge(input);

  const progress = new Map<string, DiskProgress>(
    input.disks.map((d) => [d.diskId, { diskId: d.diskId, phase: 'pending' }]),
  );
  const bandwidth = installBandwidthControl(input, (diskId) => progress.get(diskId)?.phase);
  setHandler(progressQuery, () => ({
    snapshotId: input.snapshotId,
    vmId: input.vmId,
    hostId: input.hostId,
    disks: [...progress.values()],
    bandwidthBytesPerSec: bandwidth.current(),
    speedMode: bandwidth.mode(),
  }));
  setHandler(diskProgressSignal, (update) => setPhase(update.diskId, update));
  function setPhase(diskId: string, update: Omit<DiskProgress, 'diskId'>): void {
    const current = progress.get(diskId);
    if (!current || !isForward(current.phase, update.phase)) return;
    progress.set(diskId, withConvergence({ ...current, ...update, diskId }, update));
    bandwidth.phaseChanged(diskId, current.phase, update.phase);
    showConvergence(progress);
  }

  // Each disk's workflow runs in the host's agent, next to its steps; merges recorded before that
  // ran it on the engine.
  const onHost = patched('disk-on-host');
  const pickup = onHost ? new PickupWatch(input) : undefined;
  const children = input.disks.map((disk) => {
    // The child does not signal its start or its good end (the progress query takes them from here).
    setPhase(disk.diskId, { phase: 'merging' });
    const child = executeChild(DiskMergeWorkflow, {
      workflowId: diskMergeWorkflowId(input.snapshotId, disk.diskId),
      taskQueue: onHost ? hostJobTaskQueue(input.hostId) : ENGINE_TASK_QUEUE,
      staticSummary: `merge ${disk.topVolumeId} into ${disk.baseVolumeId} on ${disk.diskId} of ${input.vmId}`,
      args: [
        {
          snapshotId: input.snapshotId,
          vmId: input.vmId,
          hostId: input.hostId,
          disk,
          options: input.options,
          parentWorkflowId: workflowId,
        },
      ],
    }).then((merged) => {
      setPhase(merged.diskId, {
        phase: merged.outcome,
        commitKind: merged.commitKind,
        ...(merged.mode === undefined ? {} : { mode: merged.mode }),
        ...(merged.activeVolumeId === undefined ? {} : { activeVolumeId: merged.activeVolumeId }),
        ...(merged.stoppedMidMerge === undefined ? {} : { stoppedMidMerge: merged.stoppedMidMerge }),
      });
      return merged;
    });
    // A disk no host agent picked up fails when the pickup watch says so, not when its child ends.
    return pickup ? pickup.track(disk, child) : child;
  });
  void pickup?.watch();
  const settled = await Promise.allSettled(children);
  // A setBandwidth update still asking the host gets its answer before the workflow ends.
  await CancellationScope.nonCancellable(() => condition(allHandlersFinished));

  const outcomes: DiskOutcome[] = settled.map((s, i) =>
    s.status === 'fulfilled'
      ? s.value
      : {
          diskId: input.disks[i].diskId,
          outcome: 'failed',
          reason: reasonOf(s.reason),
          ...failureTypeOf(s.reason),
          topKept: true,
        },
  );
  for (const o of outcomes) {
    const current = progress.get(o.diskId);
    if (current && o.outcome === 'failed')
      progress.set(o.diskId, {
        ...current,
        phase: current.phase === 'cancelled' ? 'cancelled' : 'failed',
        reason: o.reason,
      });
  }

  const cancelled = settled.find((s) => s.status === 'rejected' && isCancellation(s.reason));
  if (cancelled && cancelled.status === 'rejected') {
    tagOutcome('cancelled');
    throw cancelled.reason;
  }

  const failures = outcomes.filter((o) => o.outcome === 'failed');
  if (failures.length > 0) {
    tagOutcome('failed');
    throw failure(
      'DiskMergeFailed',
      `${failures.length} of ${outcomes.length} disks failed: ${failures.map((f) => `${f.diskId} (${f.reason})`).join('; ')}`,
      outcomes,
    );
  }
  tagOutcome('merged');
  const merged = outcomes as DiskMerged[];
  // Merges started before the offline path replay without these upserts.
  if (patched('offline-merge')) {
    const modes = new Set(merged.map((d) => d.mode ?? 'live'));
    tagModeAndActive(modes.size === 1 ? [...modes][0] : 'mixed', merged);
  }
  return { snapshotId: input.snapshotId, vmId: input.vmId, disks: merged };
}

/**
 * A disk's convergence fields after an update: a disk converging again drops its
 * `notConvergingSince`; a job that ended well drops them all (a failed disk keeps them).
 */
function withConvergence(next: DiskProgress, update: Omit<DiskProgress, 'diskId'>): DiskProgress {
  const { notConvergingSince, converging, remainingBytes, speedLiftedAt, ...rest } = next;
  if (jobState(next.phase) === 'over' && next.phase !== 'failed') return rest;
  return {
    ...rest,
    ...(converging === undefined ? {} : { converging }),
    ...(remainingBytes === undefined ? {} : { remainingBytes }),
    ...(notConvergingSince === undefined || update.converging === true ? {} : { notConvergingSince }),
    ...(speedLiftedAt === undefined ? {} : { speedLiftedAt }),
  };
}

/**
 * The Web UI's "Current details" of the merge (the SDK's workflow metadata): the disks whose active
 * commit does not converge, or whose speed limit the convergence policy lifted. Not a command, so
 * histories replay as before.
 */
function showConvergence(progress: Map<string, DiskProgress>): void {
  const lines = [...progress.values()]
    .filter((d) => jobState(d.phase) === 'running' && (d.converging === false || d.speedLiftedAt))
    .map((d) => {
      const left = d.remainingBytes === undefined ? '' : `, ${(d.remainingBytes / 1048576).toFixed(1)} MiB left`;
      const lifted = d.speedLiftedAt ? `; speed limit lifted at ${d.speedLiftedAt}` : '';
      return d.converging === false
        ? `**${d.diskId}: not converging** since ${d.notConvergingSince ?? '?'}${left}${lifted}`
        : `${d.diskId}: converging${left}${lifted}`;
    });
  setCurrentDetails(lines.join('\n\n'));
}

/** A failed disk's named failure type, when it has one (old merges' outcomes did not carry it). */
function failureTypeOf(err: unknown): { failureType?: string } {
  const type = nonRetryableTypeOf(err);
  return type === undefined ? {} : { failureType: type };
}
