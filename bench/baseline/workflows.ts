import { executeChild, proxyActivities, workflowInfo } from '@temporalio/workflow';

import type { NoopActivities } from './activities';

/**
 * The throughput baseline: the shape of a live merge with nothing of its work. One parent per
 * merge, one child per disk on the engine queue, and in each child the same number of activities
 * as DiskMergeWorkflow (merge, wait, verify, delete, cleanup), each a no-op on the host's queue.
 */

export const BASELINE_ENGINE_QUEUE = 'bench-baseline-engine';
export function baselineHostQueue(hostId: string): string {
  return `bench-baseline-host-${hostId}`;
}

export interface BaselineMergeInput {
  hostId: string;
  disks: string[];
}

export async function BaselineMergeWorkflow(input: BaselineMergeInput): Promise<number> {
  const { workflowId } = workflowInfo();
  const done = await Promise.all(
    input.disks.map((diskId) =>
      executeChild(BaselineDiskWorkflow, {
        workflowId: `${workflowId}-disk-${diskId}`,
        taskQueue: BASELINE_ENGINE_QUEUE,
        args: [{ hostId: input.hostId, diskId }],
      }),
    ),
  );
  return done.length;
}

export async function BaselineDiskWorkflow(input: { hostId: string; diskId: string }): Promise<string> {
  const host = proxyActivities<NoopActivities>({
    taskQueue: baselineHostQueue(input.hostId),
    startToCloseTimeout: '1 minute',
  });
  await host.noopMerge(input.diskId);
  await host.noopWait(input.diskId);
  await host.noopVerify(input.diskId);
  await host.noopDelete(input.diskId);
  await host.noopCleanup(input.diskId);
  return input.diskId;
}
