import { Context, log } from '@temporalio/activity';
import { z } from 'zod';

import { parseInput } from './host-step';

export const pickupCheckSchema = z.object({
  workflowIds: z.array(z.string().min(1)).min(1),
  /** Why they are ended: the reason the merge gives for each of those disks. */
  reason: z.string().min(1),
});
export type PickupCheck = z.infer<typeof pickupCheckSchema>;

/**
 * Of the disk workflows started on a host's queue, those no host agent ever picked up (no workflow
 * task started): each is terminated with `reason`, and its id returned. Runs on the engine once the
 * pickup timeout has passed; a disk workflow picked up after it refuses by itself (disk-merge.ts),
 * so one found unpicked here never touches its disk. Safe to run again: an ended one counts again.
 */
export async function dropUnpickedDisks(input: PickupCheck): Promise<string[]> {
  const { workflowIds, reason } = parseInput(pickupCheckSchema, input);
  const client = Context.current().client;
  const dropped: string[] = [];
  for (const workflowId of workflowIds) {
    const handle = client.workflow.getHandle(workflowId);
    const events = (await handle.fetchHistory()).events ?? [];
    if (events.some((e) => e.workflowTaskStartedEventAttributes)) continue;
    const { status } = await handle.describe();
    if (status.name === 'RUNNING') {
      log.warn('no host agent picked up the disk: terminated', { workflowId, reason });
      await handle.terminate(reason);
    } else if (status.name !== 'TERMINATED') continue;
    dropped.push(workflowId);
  }
  return dropped;
}

export const engineActivities = { dropUnpickedDisks };
export type EngineActivities = typeof engineActivities;
