import { executeChild, proxyActivities, proxyLocalActivities, workflowInfo } from '@temporalio/workflow';

import type { NoopActivities } from './activities';

/**
 * The throughput baseline: the shape of a live merge with nothing of its work. One parent per
 * merge, one child per disk, and in each child the same steps as DiskMergeWorkflow (merge, wait,
 * verify, delete, cleanup), each a no-op. Two shapes, as the product had them: `engine`, the child
 * on the engine queue and every step an activity on the host's queue (before `disk-on-host`);
 * `host`, the child on the host's queue, its short steps local activities and its wait an activity
 * on that same queue (the product now).
 */

export const BASELINE_ENGINE_QUEUE = 'bench-baseline-engine';
export function baselineHostQueue(hostId: string): string {
  return `bench-baseline-host-${hostId}`;
}

export type BaselineShape = 'engine' | 'host';

export interface BaselineMergeInput {
  hostId: string;
  disks: string[];
  /** Where the children run; `engine` when unset. */
  shape?: BaselineShape;
}

export async function BaselineMergeWorkflow(input: BaselineMergeInput): Promise<number> {
  const { workflowId } = workflowInfo();
  const done = await Promise.all(
    input.disks.map((diskId) =>
      executeChild(BaselineDiskWorkflow, {
        workflowId: `${workflowId}-disk-${diskId}`,
        taskQueue: input.shape === 'host' ? baselineHostQueue(input.hostId) : BASELINE_ENGINE_QUEUE,
        args: [{ hostId: input.hostId, diskId }],
      }),
    ),
  );
  return done.length;
}

export async function BaselineDiskWorkflow(input: { hostId: string; diskId: string }): Promise<string> {
  const hostQueue = baselineHostQueue(input.hostId);
  const host = proxyActivities<NoopActivities>({ taskQueue: hostQueue, startToCloseTimeout: '1 minute' });
  const steps =
    workflowInfo().taskQueue === hostQueue
      ? proxyLocalActivities<NoopActivities>({ startToCloseTimeout: '1 minute' })
      : host;
  await steps.noopMerge(input.diskId);
  await host.noopWait(input.diskId);
  await steps.noopVerify(input.diskId);
  await steps.noopDelete(input.diskId);
  await steps.noopCleanup(input.diskId);
  return input.diskId;
}
