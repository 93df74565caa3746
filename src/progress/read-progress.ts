import type { Client } from '@temporalio/client';
import { defaultPayloadConverter, fromPayloadsAtIndex } from '@temporalio/common';

import { diskMergeWorkflowId, liveMergeWorkflowId } from '../config/names';
import { progressQueryName } from '../config/names';
import { checkpointSchema } from '../domain/checkpoint';
import { convergenceProgress } from '../domain/convergence';
import { jobState } from '../domain/phases';
import type { MergeProgress } from '../domain/progress';
import { speedProgress } from '../domain/speed';

/**
 * A merge's progress as a person wants it: the `progress` query (each disk's phase, and offset/len
 * as of the job's last status change), with the live offset/len of each running block job taken
 * from its wait activity's last heartbeat (the workflow history records neither).
 */
export async function readMergeProgress(client: Client, snapshotId: string): Promise<MergeProgress> {
  const progress = await client.workflow
    .getHandle(liveMergeWorkflowId(snapshotId))
    .query<MergeProgress>(progressQueryName);
  const disks = await Promise.all(
    progress.disks.map(async (disk) => {
      if (jobState(disk.phase) !== 'running') return disk;
      const live = await liveCheckpoint(client, diskMergeWorkflowId(snapshotId, disk.diskId));
      if (!live) return disk;
      const { notConvergingSince, converging, remainingBytes, speedLiftedAt, ...rest } = disk;
      const fromQuery = { notConvergingSince, converging, remainingBytes, speedLiftedAt };
      return {
        ...rest,
        jobStatus: live.status,
        offset: live.offset,
        len: live.len,
        // The heartbeat's convergence is the newer; without one, the query's stays.
        ...dropUndefined(live.convergence ? convergenceProgress(live.convergence) : fromQuery),
        ...(live.speed ? { speed: speedProgress(live.speed) } : {}),
      };
    }),
  );
  return { ...progress, disks };
}

async function liveCheckpoint(client: Client, workflowId: string) {
  try {
    const description = await client.workflow.getHandle(workflowId).describe();
    const wait = description.raw.pendingActivities?.find((a) => a.activityType?.name === 'waitForBlockJob');
    const payloads = wait?.heartbeatDetails?.payloads;
    if (!payloads?.length) return undefined;
    const parsed = checkpointSchema.safeParse(fromPayloadsAtIndex(defaultPayloadConverter, 0, payloads));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
