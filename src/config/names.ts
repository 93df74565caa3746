/**
 * Task queues, ids, and the workflows' query, signal and update names: the one place every
 * workflow, worker and client takes them from.
 */

export const ENGINE_TASK_QUEUE = 'live-merge-engine';

/** The LiveMergeWorkflow query that answers the merge's progress (domain/progress). */
export const progressQueryName = 'progress';
/** The signal a disk's block-job wait sends its LiveMergeWorkflow with the job's progress. */
export const diskProgressSignalName = 'diskProgress';
/** The LiveMergeWorkflow update that changes the merge's speed limit (see domain/bandwidth). */
export const setBandwidthUpdateName = 'setBandwidth';

/** A host's short steps: merge, verify, delete, clean up, cancel, set speed. */
export function hostTaskQueue(hostId: string): string {
  return `live-merge-host-${hostId}`;
}

/**
 * A host's disk workflows (DiskMergeWorkflow, since `disk-on-host`) and their block-job waits, one
 * per running job for as long as it runs: a queue of their own, so that however many jobs run,
 * they never hold the slots the host's short steps need (local activities, with slots of their own).
 */
export function hostJobTaskQueue(hostId: string): string {
  return `live-merge-host-${hostId}-jobs`;
}

/** One LiveMergeWorkflow per snapshot: the workflow id is derived from the snapshot id. */
export function liveMergeWorkflowId(snapshotId: string): string {
  return `live-merge-${snapshotId}`;
}

export function diskMergeWorkflowId(snapshotId: string, diskId: string): string {
  return `live-merge-${snapshotId}-disk-${diskId}`;
}

/**
 * QEMU job id of a disk's commit. Derived from the disk and the top volume only, so every retry
 * of the merge step, in any worker process, names the same job and adopts it instead of starting
 * a second one. `.` separates the parts: ids cannot contain it (QEMU job ids can), so no two
 * (disk, top) pairs share a job id and a disk's prefix matches no other disk's jobs.
 */
export function blockJobId(diskId: string, topVolumeId: string): string {
  return `${blockJobPrefix(diskId)}${topVolumeId}`;
}

/** The top volume of a disk's commit job, or undefined for a job id that is not the disk's. */
export function topOfJob(diskId: string, jobId: string): string | undefined {
  const prefix = blockJobPrefix(diskId);
  return jobId.startsWith(prefix) && jobId.length > prefix.length ? jobId.slice(prefix.length) : undefined;
}

export function blockJobPrefix(diskId: string): string {
  return `lm.${diskId}.`;
}
