import { type ApplicationFailure, condition, proxyActivities } from '@temporalio/workflow';

import type { EngineActivities } from '../activities/pickup';
import { diskMergeWorkflowId, hostJobTaskQueue } from '../config/names';
import { engineStepOptions } from '../config/policy';
import { failure } from '../domain/failures';
import type { DiskSpec, LiveMergeInput } from '../domain/input';
import { unreachableReason } from './failures';

/**
 * The pickup bound of disks whose workflow runs on the host's queue (`disk-on-host`): a workflow
 * on a queue nobody polls never runs, so it cannot fail by itself. Once
 * `options.hostPickupTimeoutSeconds` has passed, the engine ends those of the disks still running
 * that no host agent ever picked up, and each fails HostUnreachable, its volumes untouched. A
 * disk workflow picked up after that refuses by itself (disk-merge.ts), so the two never disagree.
 */
export async function watchPickup(
  input: LiveMergeInput,
  running: () => DiskSpec[],
  checking: Set<string>,
): Promise<Map<string, ApplicationFailure>> {
  const seconds = input.options.hostPickupTimeoutSeconds;
  if (await condition(() => running().length === 0, seconds * 1000)) return new Map();
  const disks = running();
  // While the engine looks, the end of a disk it terminates is its decision, not the child's.
  for (const d of disks) checking.add(d.diskId);
  const reason = unreachableReason(input.hostId, seconds, hostJobTaskQueue(input.hostId));
  const engine = proxyActivities<EngineActivities>(engineStepOptions);
  const dropped = await engine.dropUnpickedDisks({
    workflowIds: disks.map((d) => diskMergeWorkflowId(input.snapshotId, d.diskId)),
    reason,
  });
  return new Map(
    disks
      .filter((d) => dropped.includes(diskMergeWorkflowId(input.snapshotId, d.diskId)))
      .map((d) => [
        d.diskId,
        failure('HostUnreachable', `disk ${d.diskId}: ${reason}; top volume ${d.topVolumeId} kept`),
      ]),
  );
}
